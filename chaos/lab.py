"""The lab controller now ships with kit (``kit.lab``, used by ``kit lab``); the chaos suite imports it here."""

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

__all__ = ["FAULTS", "MEMBERS", "PASSWORD", "PROJECT", "VARIANTS", "Lab", "LabError", "LabUnavailable", "Member",
           "Timeline", "engine_problem", "find_compose_dir", "jitter_sleep"]
