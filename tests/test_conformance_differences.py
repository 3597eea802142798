"""The register of known per-backend differences of the conformance suite: lookup rules, the
``known_difference`` helper, the suite's autouse fixture end to end, and the register's own sanity
(every entry names a real test, area or operation)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest

try:  # works whether or not tests/ is a package
    from . import conformance
    from .conformance import differences as d
    from .conformance.faults import KINDS, SINGLE_ATTEMPT, interface_operations
except ImportError:
    import conformance
    from conformance import differences as d
    from conformance.faults import KINDS, SINGLE_ATTEMPT, interface_operations

TESTS = Path(__file__).resolve().parent
REGISTER = {
    ("fake", "test_whole"): d.Difference("no such feature on fake"),
    ("fake", "area_x"): d.Difference("area differs on fake", action="xfail"),
    ("fake", "test_old"): d.Difference("fixed in fake 2.1", versions="<2.1"),
    ("fake", "test_faulty"): d.Difference("fake loses acks", faults_only=True),
    ("fake", "test_partly"): d.Difference("fake sorts differently", inline=True),
    ("other", "test_partly"): d.Difference("other backend's reason", inline=True),
}


def _factory(name: str = "fake", faults: bool = False, version: str = "fake 2.0", test: str = "t",
             area: str = "a") -> SimpleNamespace:
    return SimpleNamespace(name=name, faults=object() if faults else None, server_version=lambda: version,
                           test_name=test, area=area)


def test_versions_are_parsed_from_server_version_text():
    assert d.version_tuple("PostgreSQL 16.2 on x86_64-pc-linux-gnu") == (16, 2)
    assert d.version_tuple("CockroachDB CCL v23.1.11 (x86_64)") == (23, 1, 11)
    with pytest.raises(ValueError):
        d.version_tuple("no digits")
    assert d.version_matches(None, (1,))
    assert d.version_matches(">=15,<17", (16, 2)) and not d.version_matches(">=15,<17", (17,))
    assert d.version_matches("<2.1", (2, 0, 9)) and not d.version_matches("<2.1", (2, 1))
    assert d.version_matches("==16", (16, 0))
    with pytest.raises(ValueError, match="bad version range"):
        d.version_matches("~16", (16,))


def test_entries_are_checked_when_declared():
    with pytest.raises(ValueError, match="skip' or 'xfail"):
        d.Difference("x", action="ignore")
    with pytest.raises(ValueError, match="reason"):
        d.Difference("  ")
    with pytest.raises(ValueError, match="version range"):
        d.Difference("x", versions="newer")
    with pytest.raises(ValueError):
        d.FaultGap("x", kinds=("timeout",))


def test_lookup_prefers_the_test_then_its_area_and_honours_scope():
    look = lambda test, area="a", **kw: d.lookup("fake", test, area, register=REGISTER, **{"faults": False, **kw})  # noqa: E731
    assert look("test_whole").reason == "no such feature on fake"
    assert look("test_other", area="area_x").action == "xfail"
    assert look("test_unlisted") is None
    assert d.lookup("other", "test_whole", "a", faults=False, register=REGISTER) is None, "per backend"
    assert look("test_old", version=(2, 0)) is not None and look("test_old", version=(2, 1)) is None
    assert look("test_old", version=lambda: (3,)) is None
    assert look("test_faulty") is None and look("test_faulty", faults=True) is not None
    assert look("test_partly") is None, "inline entries apply only where the test asks"
    assert look("test_partly", inline=True).reason == "fake sorts differently"


def test_known_difference_skips_only_for_a_registered_reason():
    with pytest.raises(pytest.skip.Exception, match="fake sorts differently"):
        d.known_difference(_factory(test="test_partly"), "fake sorts differently", register=REGISTER)
    # The reason is registered, but for another backend: the test goes on (nothing raised).
    d.known_difference(_factory(name="postgres", test="test_partly"), "fake sorts differently", register=REGISTER)
    # Registered for this backend, but another test: goes on.
    d.known_difference(_factory(test="test_elsewhere"), "fake sorts differently", register=REGISTER)
    with pytest.raises(pytest.fail.Exception, match="no entry of the register"):
        d.known_difference(_factory(test="test_partly"), "an undeclared reason", register=REGISTER)
    with pytest.raises(RuntimeError, match="_known_differences"):
        d.known_difference(_factory(test=None), "fake sorts differently", register=REGISTER)


def test_whole_test_entries_skip_or_mark_xfail():
    marks: list = []
    request = SimpleNamespace(function=SimpleNamespace(__name__="test_whole", __module__="conformance.area_x"),
                              node=SimpleNamespace(name="test_whole[s]"), applymarker=marks.append)
    factory = _factory()
    with pytest.raises(pytest.skip.Exception, match="known difference of fake: no such feature"):
        d.check_whole_test(request, factory, register=REGISTER)
    assert (factory.test_name, factory.area) == ("test_whole", "area_x")
    request.function.__name__ = "test_anything"
    d.check_whole_test(request, factory, register=REGISTER)
    (mark,) = marks
    assert mark.name == "xfail" and mark.kwargs["strict"] is True and "area differs" in mark.kwargs["reason"]


def test_spared_operations_merge_single_attempt_and_gaps():
    gaps = {("fake", "workflow_claim"): d.FaultGap("lost claims"),
            ("fake", "notify"): d.FaultGap("x", kinds=("serialization",)),
            ("other", "migrate"): d.FaultGap("y")}
    spared = d.spared_operations("fake", gaps)
    assert spared["workflow_claim"] == ("ambiguous",)
    assert set(spared["notify"]) == set(KINDS)  # single-attempt (all kinds) merged with a gap of one kind
    assert "migrate" not in spared
    assert set(SINGLE_ATTEMPT) <= set(spared)


def test_the_register_names_real_tests_areas_and_operations():
    tests = set(conformance.__all__)
    areas = {m.__name__.rpartition(".")[2] for m in conformance.AREAS}
    for (backend, target), diff in d.REGISTER.items():
        assert target in tests or target in areas, f"register entry for {backend} names no test or area: {target}"
        assert diff.reason.strip()
    ops = set(interface_operations())
    for backend, op in d.FAULT_GAPS:
        assert op in ops, f"fault gap for {backend} names no interface operation: {op}"
    assert set(SINGLE_ATTEMPT) <= ops
    # Every known bug that the fault pass spares is pinned by a test that fails until it is fixed.
    bugs = {diff.reason for diff in d.REGISTER.values() if diff.action == "xfail"}
    assert {f"known bug: {gap.reason}" for gap in d.FAULT_GAPS.values()} <= bugs


def test_the_suite_applies_the_register_end_to_end(tmp_path):
    """A tiny adapter for a fake backend, run by pytest: whole-test skip, strict xfail (a conforming
    backend XPASSes and fails), inline skip, and an undeclared reason failing."""
    (tmp_path / "test_fake_adapter.py").write_text(textwrap.dedent('''
        import pytest
        from types import SimpleNamespace
        from conformance import _known_differences  # noqa: F401 - the suite's autouse fixture
        from conformance import differences as d

        d.REGISTER[("fake", "test_skipped")] = d.Difference("fake has no such thing")
        d.REGISTER[("fake", "test_expected_to_fail")] = d.Difference("fake differs", action="xfail")
        d.REGISTER[("fake", "test_conforms_after_all")] = d.Difference("fake differed once", action="xfail")
        d.REGISTER[("fake", "test_partly")] = d.Difference("fake lacks part two", inline=True)

        @pytest.fixture
        def backend_factory():
            return SimpleNamespace(name="fake", faults=None, server_version=lambda: "fake 1.0")

        def test_skipped(backend_factory):
            raise AssertionError("never runs")

        def test_expected_to_fail(backend_factory):
            assert False

        def test_conforms_after_all(backend_factory):
            assert True

        def test_partly(backend_factory):
            d.known_difference(backend_factory, "fake lacks part two")
            raise AssertionError("never reached")

        def test_undeclared(backend_factory):
            d.known_difference(backend_factory, "made up on the spot")

        def test_unaffected(backend_factory):
            assert True
    '''))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider", "-p", "no:randomly",
                           str(tmp_path / "test_fake_adapter.py")], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)
    out = proc.stdout
    outcome = {line.split()[1].split("::")[-1]: line.split()[0] for line in out.splitlines()
               if line.split() and line.split()[0] in ("PASSED", "FAILED", "SKIPPED", "XFAIL", "XPASS")
               and "::" in line}
    skipped = [line for line in out.splitlines() if line.startswith("SKIPPED")]
    assert outcome.get("test_expected_to_fail") == "XFAIL", out
    assert outcome.get("test_conforms_after_all") == "FAILED", out  # strict: [XPASS(strict)]
    assert outcome.get("test_undeclared") == "FAILED" and "no entry of the register" in out, out
    assert outcome.get("test_unaffected") == "PASSED", out
    assert len(skipped) == 2 and any("fake has no such thing" in s for s in skipped) and any(
        "fake lacks part two" in s for s in skipped), out
