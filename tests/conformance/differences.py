"""The register of known per-backend differences (as psycopg keeps one for CockroachDB).

A backend conforms unless :data:`REGISTER` says otherwise, entry by entry, with the reason:

    REGISTER[("cockroachdb", "test_notify_wakes_a_waiter")] = Difference(
        "no LISTEN/NOTIFY: waiters poll (capability listen_notify)", action="skip")

The key is (backend name, test name or area): a test name (``test_x``, without parameters) or an area
(the module of the suite, e.g. ``notifications``). ``action``: ``skip`` (the behaviour does not exist
there) or ``xfail`` (it exists but differs; strict, so a backend that starts conforming is noticed).
``versions`` limits the entry to server versions (``">=23.1,<24"``); ``faults_only`` to the fault pass.
``inline`` entries cover part of a test: they apply where the test calls
``known_difference(backend_factory, reason)``, not to the whole test. A reason that no entry of the
register names fails the test that asks for it: differences are declared here, never improvised.

:data:`FAULT_GAPS` is the same register for the fault-injected pass, by operation: the fault kinds an
operation of a backend does not withstand yet (a backend bug, with its precise description). The pass
spares that operation those kinds and injects everything else everywhere.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pytest


@dataclass(frozen=True)
class Difference:
    """Why a backend differs from the suite in one test or area, and what the suite does about it."""

    reason: str
    action: str = "skip"  # skip | xfail
    versions: str | None = None  # e.g. ">=15,<17": only on these server versions; None: all
    faults_only: bool = False  # only in the fault-injected pass
    inline: bool = False  # applies where the test calls known_difference(), not to the whole test

    def __post_init__(self) -> None:
        if self.action not in ("skip", "xfail"):
            raise ValueError(f"Difference.action must be 'skip' or 'xfail', got {self.action!r}")
        if not self.reason.strip():
            raise ValueError("a known difference needs a reason")
        if self.versions is not None:
            _parse_spec(self.versions)


def _bug(text: str) -> Difference:
    """A known bug of a backend, pinned by a test of the suite (strict xfail: a fix shows as XPASS)."""
    return Difference(f"known bug: {text}", action="xfail")


# (backend name, test name or area) -> Difference.
REGISTER: dict[tuple[str, str], Difference] = {
    ("postgres", "test_create_same_id_again_by_the_same_owner_is_not_a_new_run"): Difference(
        "after a lost acknowledgement, workflow_create takes an identical row (same owner, epoch 1, same "
        "inputs) for its own insert: without a creation token it cannot tell it from a second start of the "
        "id by the same owner (the engine never starts one id twice in a process: Runtime.hold)",
        faults_only=True),
}

# The restricted PostgreSQL profile (tests/test_conformance_restricted.py: the strategies Citus and
# CockroachDB inherit, on PostgreSQL) shares PostgreSQL's entries.
REGISTER.update({("postgres-restricted", test): diff for (backend, test), diff in list(REGISTER.items())
                 if backend == "postgres"})

# The citus backend (backends/citus) reads back every outcome the PostgreSQL backend reads back (claim tokens,
# call_outcomes, keyed sends): it shares PostgreSQL's entries.
REGISTER.update({("citus", test): diff for (backend, test), diff in list(REGISTER.items()) if backend == "postgres"})
REGISTER.update({
    ("citus", "test_a_serialization_failure_in_a_schedule_tick_is_retried"): Difference(
        "the test aims its fault at the PostgreSQL enqueue statement by its text (WITH ...); the citus backend "
        "enqueues with INSERT statements. The same fault in a Citus schedule tick is retried: "
        "tests/test_citus.py::test_a_serialization_failure_in_a_schedule_tick_is_retried"),
})


# The CockroachDB backend (kit.backends.cockroachdb), on its serializable PostgreSQL profile
# (tests/test_conformance_cockroachdb.py) and on a real cluster (tests/test_conformance_cockroachdb_cluster.py).
# It reads back every lost acknowledgement the PostgreSQL backend's register lists (claims by a claim token,
# keyless sends by a generated key, cancel/resume/fork/gc/schedule definitions by their own read-backs).
_NO_MIGRATION_COMMIT = Difference(
    "migrate applies each schema change in a transaction of its own (autocommit, CockroachDB's recommendation: "
    "its schema changes run asynchronously and a column added in a transaction is not usable in it), so a "
    "migration has no COMMIT to lose; lost acknowledgements of its statements are read back "
    "(tests/test_cockroachdb_profile.py::test_lost_ack_of_a_migration_statement_is_read_back)")
for _name in ("cockroachdb", "cockroachdb-profile"):
    REGISTER[(_name, "test_lost_ack_of_a_migration_returns_the_versions_applied")] = _NO_MIGRATION_COMMIT


@dataclass(frozen=True)
class FaultGap:
    """An operation that mishandles a fault kind (a known bug): the fault pass spares it that kind."""

    reason: str
    kinds: tuple[str, ...] = ("ambiguous",)

    def __post_init__(self) -> None:
        if not self.reason.strip() or not self.kinds or set(self.kinds) - {"serialization", "ambiguous"}:
            raise ValueError(f"bad fault gap: {self!r}")


# (backend name, interface operation) -> FaultGap: known bugs (each pinned by a `_bug` entry of REGISTER),
# spared in the fault pass. None at present.
FAULT_GAPS: dict[tuple[str, str], FaultGap] = {}


def spared_operations(backend: str, gaps: Mapping[tuple[str, str], FaultGap] | None = None
                      ) -> dict[str, tuple[str, ...]]:
    """Operation -> fault kinds the fault pass spares on ``backend``: single-attempt operations (all kinds)
    and the backend's known gaps."""
    from .faults import KINDS, SINGLE_ATTEMPT

    spared: dict[str, tuple[str, ...]] = {op: KINDS for op in SINGLE_ATTEMPT}
    for (name, op), gap in (FAULT_GAPS if gaps is None else gaps).items():
        if name == backend:
            spared[op] = tuple(sorted(set(spared.get(op, ())) | set(gap.kinds)))
    return spared


def version_tuple(text: str) -> tuple[int, ...]:
    """The first dotted number in a server's version text ("PostgreSQL 16.2 on ..." -> (16, 2))."""
    m = re.search(r"(\d+(?:\.\d+)*)", text or "")
    if m is None:
        raise ValueError(f"no version number in {text!r}")
    return tuple(int(p) for p in m.group(1).split("."))


_OPS = {">=": lambda a, b: a >= b, "<=": lambda a, b: a <= b, ">": lambda a, b: a > b,
        "<": lambda a, b: a < b, "==": lambda a, b: a == b}


def _parse_spec(spec: str) -> list[tuple[str, tuple[int, ...]]]:
    out = []
    for part in spec.split(","):
        m = re.fullmatch(r"\s*(>=|<=|==|>|<)\s*(\d+(?:\.\d+)*)\s*", part)
        if m is None:
            raise ValueError(f"bad version range {spec!r}: use e.g. '>=15,<17'")
        out.append((m.group(1), tuple(int(p) for p in m.group(2).split("."))))
    return out


def version_matches(spec: str | None, version: tuple[int, ...]) -> bool:
    if spec is None:
        return True
    n = max([len(version)] + [len(v) for _, v in _parse_spec(spec)])

    def pad(v: tuple[int, ...]) -> tuple[int, ...]:
        return v + (0,) * (n - len(v))

    return all(_OPS[op](pad(version), pad(v)) for op, v in _parse_spec(spec))


def known_reasons(register: Mapping[tuple[str, str], Difference] | None = None) -> set[str]:
    return {d.reason for d in (REGISTER if register is None else register).values()}


def lookup(backend: str, test: str, area: str, *, faults: bool, version: Any = None, inline: bool = False,
           register: Mapping[tuple[str, str], Difference] | None = None) -> Difference | None:
    """The entry that applies to this test on this backend (the test's own entry before its area's).
    ``version``: a tuple, or a callable returning one (only called when an entry has a version range)."""
    reg = REGISTER if register is None else register
    for target in (test, area):
        diff = reg.get((backend, target))
        if diff is None or diff.inline != inline or (diff.faults_only and not faults):
            continue
        if diff.versions is not None:
            v = version() if callable(version) else version
            if not version_matches(diff.versions, v):
                continue
        return diff
    return None


def apply(diff: Difference, backend: str, request: Any = None) -> None:
    """Skip, or mark as expected to fail (strict), a test the register says differs on ``backend``."""
    text = f"known difference of {backend}: {diff.reason}"
    if diff.action == "skip":
        pytest.skip(text)
    if request is not None:
        request.applymarker(pytest.mark.xfail(reason=text, strict=True))
    else:
        pytest.xfail(text)


def _names(request: Any) -> tuple[str, str]:
    test = getattr(request.function, "__name__", request.node.name.split("[")[0])
    area = getattr(request.function, "__module__", "").rpartition(".")[2]
    return test, area


def check_whole_test(request: Any, factory: Any, register: Mapping[tuple[str, str], Difference] | None = None
                     ) -> None:
    """The autouse fixture's work: apply the entry (not inline) for this test or its area, if any."""
    test, area = _names(request)
    factory.test_name, factory.area = test, area
    diff = lookup(factory.name, test, area, faults=factory.faults is not None,
                  version=lambda: version_tuple(factory.server_version()), register=register)
    if diff is not None:
        apply(diff, factory.name, request)


def known_difference(factory: Any, reason: str,
                     register: Mapping[tuple[str, str], Difference] | None = None) -> None:
    """Call inside a test before a part that some backend does differently (for ``reason``).

    Skips (or xfails) the rest of the test when the register has an inline entry with this reason for
    this backend and test (or area); does nothing on a backend that conforms; fails when no entry of the
    register names ``reason`` (an undeclared difference)."""
    if reason not in known_reasons(register):
        pytest.fail(f"known_difference({reason!r}): no entry of the register of known differences "
                    "(tests/conformance/differences.py) has this reason: declare it there", pytrace=False)
    test = getattr(factory, "test_name", None)
    area = getattr(factory, "area", None)
    if test is None:
        raise RuntimeError("known_difference() needs the suite's _known_differences fixture (import the suite "
                           "with `from conformance import *`)")
    diff = lookup(factory.name, test, area, faults=factory.faults is not None, inline=True,
                  version=lambda: version_tuple(factory.server_version()), register=register)
    if diff is not None and diff.reason == reason:
        apply(diff, factory.name)
