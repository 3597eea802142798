"""The HA chaos lab's controller, shipped with kit so ``kit lab`` works from an installed package.

:mod:`kit.lab.controller` drives the Patroni cluster of a kit checkout's ``compose/postgres-ha`` (compose
up/down/status, faults); :mod:`kit.lab.cli` is ``kit lab``. The scenarios, workload and invariant
checker stay in the repository's ``chaos/`` (docs/lab.md).
"""

from kit.lab.controller import FAULTS, Lab, Timeline
from kit.lab.host import LabError, LabUnavailable, engine_problem, find_compose_dir

__all__ = ["FAULTS", "Lab", "LabError", "LabUnavailable", "Timeline", "engine_problem", "find_compose_dir"]
