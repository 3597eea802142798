"""`kit bench compare` and `kit bench report` end to end on real PostgreSQL, at tiny sizes.

Checked: every cell of the matrix runs and writes its JSON, a rerun skips the finished cells (resume), an
unavailable target (a Citus URL without the backend or the cluster) is skipped with its reason, and the
report has its sections and tables with every chart a valid PNG drawn from the JSON. Never the numbers.
"""

from __future__ import annotations

import json
import shutil
import struct
import sys

import psycopg
import pytest
from psycopg import sql

from kit.cli import main

SECTIONS = ["## Targets", "## Throughput vs worker processes", "## Latency (p50 / p99)",
            "## CPU, commits and WAL per workflow", "## Where each target saturates", "## Recovery",
            "## Scaling projection (a model, not a measurement)", "## DBOS side by side"]
CELL_KEYS = {"cell", "target", "backend", "workload", "processes", "repeat", "workflows", "completed", "window_s",
             "server_cpu_s", "commits", "wal_bytes", "sessions", "client_cpu_s", "latency_p50_ms"}
# A Citus target on a port nobody listens on: skipped (backend not installed, or the cluster unreachable).
CITUS = "citus=citus:postgresql://kit@127.0.0.1:9/none"


def _png_size(path) -> tuple[int, int]:
    """Width and height of a PNG, after checking its signature and IHDR chunk."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path.name} is not a PNG"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert data.rstrip(b"\x00")[-8:-4] == b"IEND"
    return width, height


def _compare(pg_url: str, schema: str, out, *extra: str) -> int:
    return main(["bench", "compare", "--target", f"pg={pg_url}", "--schema", schema, "--out", str(out),
                 "--repeats", "1", "--scale", "0.02", "--processes", "2", "--dbos", "no", *extra])


def test_matrix_runs_resumes_and_reports(pg_url, schema, tmp_path, capsys):
    pytest.importorskip("matplotlib", reason="the report needs matplotlib (the test and bench extras install it)")
    out = tmp_path / "cmp"
    assert _compare(pg_url, schema, out, "--target", CITUS) == 0
    cells = sorted((out / "cells").glob("*.json"))
    names = {p.stem for p in cells}
    # seq, latency and recovery at one process, par and queue-drain at --processes; the citus cells skipped
    assert names == {f"pg__{w}__p{n}__r1" for w, n in [("seq", 1), ("par", 2), ("queue-drain", 2), ("latency", 1),
                                                        ("recovery", 1)]}
    for path in cells:
        cell = json.loads(path.read_text())
        assert CELL_KEYS <= set(cell), path.name
        assert cell["backend"] == "postgres" and cell["completed"] == cell["workflows"] > 0
        assert cell["commits"] is not None and cell["wal_bytes"] is not None
    matrix = json.loads((out / "matrix.json").read_text())
    assert matrix["targets"]["pg"]["unavailable"] is None
    assert matrix["targets"]["citus"]["unavailable"]  # the reason, e.g. "unknown backend 'citus'"
    assert "9/none" in matrix["targets"]["citus"]["url"] and len(matrix["cells"]) == 10
    err = capsys.readouterr().err
    assert "target citus skipped:" in err

    # Resume: every finished cell is skipped, none rewritten.
    stamps = {p.name: p.stat().st_mtime_ns for p in cells}
    assert _compare(pg_url, schema, out, "--target", CITUS) == 0
    assert "5 already done" in capsys.readouterr().err
    assert {p.name: p.stat().st_mtime_ns for p in (out / "cells").glob("*.json")} == stamps

    # The report, rebuilt from the JSON alone in another directory.
    copy = tmp_path / "copy"
    shutil.copytree(out / "cells", copy / "cells")
    shutil.copy(out / "matrix.json", copy / "matrix.json")
    assert main(["bench", "report", str(copy), "--output", str(tmp_path / "rep")]) == 0
    report = (tmp_path / "rep" / "report.md").read_text()
    positions = [report.index(s) for s in SECTIONS]
    assert positions == sorted(positions)
    assert "| pg | queue-drain | 2 |" in report and "target `citus` skipped" in report
    assert report.count("|---") >= 7  # one table per section and the targets
    assert "dbos" in report.split("## DBOS side by side")[1]  # why it was not run
    charts = sorted((tmp_path / "rep" / "charts").glob("*.png"))
    assert [p.name for p in charts] == sorted(["throughput.png", "latency.png", "cpu.png", "commits_wal.png",
                                               "projection.png"])
    for png in charts:
        width, height = _png_size(png)
        assert width > 100 and height > 100
        assert f"charts/{png.name}" in report


def test_report_without_matplotlib_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert main(["bench", "report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "needs matplotlib" in err and "durable-kit[bench]" in err and err.count("\n") == 1


@pytest.mark.parametrize("argv, message", [
    (["--target", "no-equals-sign"], "expected 'embedded', LABEL=URL"),
    (["--target", "x=notaurl"], "is not a database URL"),
    (["--target", "a=postgresql://h/db", "--target", "a=postgresql://h/db2"], "labels must be unique"),
    (["--workloads", "seq,bogus"], "--workloads: unknown bogus"),
    (["--processes", "0"], "--processes values must be between"),
    (["--repeats", "0"], "--repeats must be between"),
])
def test_bad_options_are_one_line_usage_errors(argv, message, tmp_path, capsys):
    assert main(["bench", "compare", "--out", str(tmp_path / "o"), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_report_of_an_empty_directory_is_one_line(tmp_path, capsys):
    pytest.importorskip("matplotlib", reason="the report needs matplotlib (the test and bench extras install it)")
    assert main(["bench", "report", str(tmp_path)]) == 2
    assert "no matrix.json" in capsys.readouterr().err


def test_dbos_side_by_side(pg_url, schema, tmp_path):
    pytest.importorskip("dbos", reason="DBOS is an optional extra (durable-kit[dbos]); nothing else installs it")
    pytest.importorskip("matplotlib", reason="the report needs matplotlib (the test and bench extras install it)")
    out = tmp_path / "cmp"
    try:
        rc = main(["bench", "compare", "--target", f"pg={pg_url}", "--schema", schema, "--out", str(out),
                   "--repeats", "1", "--scale", "0.02", "--processes", "1", "--workloads", "queue-drain",
                   "--dbos", "yes"])
        assert rc == 0
        names = {p.stem for p in (out / "cells").glob("*.json")}
        assert names == {"pg__queue-drain__p1__r1", "dbos__dbos-queue-drain__p1__r1"}
        cell = json.loads((out / "cells" / "dbos__dbos-queue-drain__p1__r1.json").read_text())
        assert cell["completed"] == cell["workflows"] > 0 and cell["backend"] == "dbos"
        report = (out / "report.md").read_text()
        assert "kit ÷ DBOS" in report.split("## DBOS side by side")[1]
    finally:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema + "_dbos")))


def test_target_specs_and_citus_lanes_in_the_url():
    from dataclasses import replace

    from kit.bench.compare import parse_target

    assert parse_target("embedded").url is None
    plain = parse_target("pg=postgresql://u:p@h:5432/db")
    assert (plain.label, plain.backend, plain.url) == ("pg", None, "postgresql://u:p@h:5432/db")
    citus = parse_target("c2=citus:postgresql://u:p@h:5432/db?sslmode=disable")
    assert (citus.backend, citus.url) == ("citus", "postgresql://u:p@h:5432/db?sslmode=disable")
    lanes = replace(citus, lanes=4)
    assert lanes.key == "c2-l4"
    conninfo = psycopg.conninfo.conninfo_to_dict(lanes.connect_url(""))
    assert conninfo["options"] == "-c citus.shard_count=4" and conninfo["sslmode"] == "disable"
