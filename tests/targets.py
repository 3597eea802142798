"""Backend targets: where a backend-agnostic test runs, beyond the PostgreSQL servers of tests/servers.py.

A test that uses ``pg_url`` runs once per selected PostgreSQL server. A module (or test) marked
``pytest.mark.all_backends`` also runs on every selected *extra target*: a database behind another backend.
Its ``pg_url`` is then that target's URL, and the target's backend is configured through ``KIT_BACKEND`` for
the duration of the test (so worker subprocesses inherit it) when it is not detected from the server.

Extra targets
  citus          a local Citus cluster: coordinator + 2 workers on loopback (tests/citus_cluster.py), built by
                 scripts/citus-setup.sh; detected as the ``citus`` backend from the coordinator's extension.

Selection: ``KIT_TEST_TARGETS`` (comma list of extra targets; ``none`` for none; default: every available
one). ``KIT_TEST_TARGET_SCOPE``: ``core`` (default) runs the marked modules of CORE_MODULES on the targets
(the engine and the SIGKILL crash suites; the targets' conformance adapters and own tests always run);
``all`` runs every marked module there (the CLI, monitor, queues, limits, schedules, lifecycle, ... suites:
about 340 more tests, too slow for the 60-minute CI budget on a 2-core machine). A test that cannot run on a target says why with ``pytest.mark.skip_targets(citus="reason")``: it is
reported as skipped with that reason there, and runs everywhere else.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

try:  # works whether or not tests/ is a package
    from .citus_cluster import citus_available
except ImportError:
    from citus_cluster import citus_available


@dataclass(frozen=True)
class Target:
    """An extra target: ``server`` names what the session's server pool starts for it; ``backend`` is set as
    ``KIT_BACKEND`` during its tests (None: detected from the server)."""

    name: str
    server: str
    backend: str | None
    unavailable: Callable[[], str | None]  # None when it can run here, else why not


EXTRA_TARGETS: dict[str, Target] = {
    "citus": Target("citus", server="citus", backend=None, unavailable=citus_available),
}


# Marked modules that run on the extra targets in the default scope (KIT_TEST_TARGET_SCOPE=core).
CORE_MODULES = frozenset({"test_engine", "test_crash", "test_crash_lifecycle", "test_crash_messaging"})


def target_scope() -> str:
    """``core`` or ``all`` (``$KIT_TEST_TARGET_SCOPE``); ValueError for anything else."""
    raw = os.environ.get("KIT_TEST_TARGET_SCOPE", "").strip().lower() or "core"
    if raw not in ("core", "all"):
        raise ValueError(f"KIT_TEST_TARGET_SCOPE: {raw!r} is not 'core' or 'all'")
    return raw


def runs_on_targets(module_name: str) -> bool:
    """Whether a module marked ``all_backends`` runs on the extra targets in the selected scope."""
    return target_scope() == "all" or module_name.rsplit(".", 1)[-1] in CORE_MODULES


def selected_targets() -> list[Target]:
    """The extra targets to run: ``$KIT_TEST_TARGETS`` or every available one. ValueError for an unknown
    or unavailable name given explicitly."""
    raw = os.environ.get("KIT_TEST_TARGETS", "").strip()
    if raw.lower() == "none":
        return []
    if not raw:
        return [t for t in EXTRA_TARGETS.values() if t.unavailable() is None]
    out = []
    for name in (n.strip() for n in raw.split(",") if n.strip()):
        target = EXTRA_TARGETS.get(name)
        if target is None:
            raise ValueError(f"KIT_TEST_TARGETS: unknown target {name!r} (known: {', '.join(EXTRA_TARGETS)})")
        why = target.unavailable()
        if why is not None:
            raise ValueError(f"KIT_TEST_TARGETS: target {name!r} cannot run here: {why}")
        out.append(target)
    return out


def unavailable_report() -> list[str]:
    """One line per extra target that cannot run here and why (for the session header)."""
    return [f"{t.name}: {why}" for t in EXTRA_TARGETS.values() if (why := t.unavailable()) is not None]
