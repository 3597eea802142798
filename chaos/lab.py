"""The lab controllers now ship with kit (``kit.lab``, used by ``kit lab``); the chaos suite imports them here."""

from kit.lab.citus import (
    CITUS_FAULTS,
    CITUS_GROUPS,
    CITUS_MEMBERS,
    CitusLab,
    citus_member_at,
    citus_node_address,
)
from kit.lab.controller import (
    FAULTS,
    MEMBERS,
    PASSWORD,
    PROJECT,
    VARIANTS,
    Lab,
    Member,
    Timeline,
    jitter_sleep,
)
from kit.lab.host import LabError, LabUnavailable, engine_problem, find_compose_dir

__all__ = ["CITUS_FAULTS", "CITUS_GROUPS", "CITUS_MEMBERS", "FAULTS", "MEMBERS", "PASSWORD", "PROJECT", "VARIANTS",
           "CitusLab", "Lab", "LabError", "LabUnavailable", "Member", "Timeline", "citus_member_at",
           "citus_node_address", "engine_problem", "find_compose_dir", "jitter_sleep"]
