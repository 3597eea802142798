"""Backend targets: where a backend-agnostic test runs, beyond the PostgreSQL servers of tests/servers.py.

A test that uses ``pg_url`` runs once per selected PostgreSQL server. A module (or test) marked
``pytest.mark.all_backends`` also runs on every selected *extra target* that takes marked tests, and the
modules a target names in ``modules`` run on it whether marked or not: a database behind another backend.
Its ``pg_url`` is then that target's URL, and the target's backend is configured through ``KIT_BACKEND`` for
the duration of the test (so worker subprocesses inherit it) when it is not detected from the server.

Extra targets
  citus          a local Citus cluster: coordinator + 2 workers on loopback (tests/citus_cluster.py), built by
                 scripts/citus-setup.sh; detected as the ``citus`` backend from the coordinator's extension.
  crdb-profile   the CockroachDB backend's serializable PostgreSQL profile (backend ``cockroachdb-profile``) on
                 the first selected PostgreSQL server (``KIT_TEST_PROFILE_SERVER`` picks another, e.g.
                 ``debian15``): CockroachDB's statements and retry/claim/migration logic at SERIALIZABLE. It runs
                 the engine and SIGKILL crash modules (``ENGINE_AND_CRASH``; its conformance runs through
                 tests/test_conformance_cockroachdb.py), not every ``all_backends`` module: the whole suite's
                 time budget on a 2-core CI machine.
  crdb           a real CockroachDB cluster at ``KIT_TEST_COCKROACH_URL`` (a libpq URL, e.g.
                 ``postgresql://root@host:26257/defaultdb?sslmode=disable``): the engine and crash modules and
                 every ``all_backends`` module; skipped with that reason when unset.

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
    from .servers import selected_servers
except ImportError:
    from citus_cluster import citus_available
    from servers import selected_servers

COCKROACH_URL_ENV = "KIT_TEST_COCKROACH_URL"


@dataclass(frozen=True)
class Target:
    """An extra target: ``server`` names what the session's server pool starts for it; ``backend`` is set as
    ``KIT_BACKEND`` during its tests (None: detected from the server)."""

    name: str
    server: str
    backend: str | None
    unavailable: Callable[[], str | None]  # None when it can run here, else why not
    all_backends: bool = True  # runs the tests marked all_backends
    modules: frozenset[str] = frozenset()  # test modules (by name) it runs, marked or not

    def runs(self, module: str, marked: bool) -> bool:
        """Whether a test of ``module`` (``marked``: all_backends) runs on this target."""
        return (marked and self.all_backends and runs_on_targets(module)) or module in self.modules


def _profile_server() -> str:
    """The PostgreSQL server the crdb-profile target runs on."""
    chosen = os.environ.get("KIT_TEST_PROFILE_SERVER", "").strip()
    if chosen:
        return chosen
    try:
        return selected_servers()[0]
    except (ValueError, IndexError):
        return "pgserver16"


def _profile_unavailable() -> str | None:
    server = _profile_server()
    try:
        available = selected_servers()
    except ValueError as exc:
        return str(exc)
    return None if server in available else f"PostgreSQL server {server!r} is not selected (KIT_TEST_SERVERS)"


def _cockroach_unavailable() -> str | None:
    if not os.environ.get(COCKROACH_URL_ENV, "").strip():
        return (f"no CockroachDB cluster: set {COCKROACH_URL_ENV} to a libpq URL of one "
                "(kit never downloads or starts CockroachDB)")
    return None


# The engine and SIGKILL crash suites: what the CockroachDB targets must pass besides the conformance suite.
ENGINE_AND_CRASH = frozenset({"test_engine", "test_engine_robustness", "test_crash", "test_crash_lifecycle",
                              "test_crash_messaging"})

EXTRA_TARGETS: dict[str, Target] = {
    "citus": Target("citus", server="citus", backend=None, unavailable=citus_available),
    "crdb-profile": Target("crdb-profile", server=_profile_server(), backend="cockroachdb-profile",
                           unavailable=_profile_unavailable, all_backends=False, modules=ENGINE_AND_CRASH),
    "crdb": Target("crdb", server="cockroach", backend="cockroachdb", unavailable=_cockroach_unavailable,
                   modules=ENGINE_AND_CRASH),
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
