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


# (backend name, test name or area) -> Difference. PostgreSQL conforms everywhere: no entries.
REGISTER: dict[tuple[str, str], Difference] = {}


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
