"""The Python examples of docs/integrations.md run as written and print what their comments say.

Every ```python block is a complete program. It runs in a subprocess with ``DATABASE_URL`` set to the
test server, kit's schema (``KIT_SCHEMA``) and the example's own tables (``PGOPTIONS`` search_path) in
the test's schema; each ``print(...)  # text`` line must print ``text``, in order.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "docs" / "integrations.md"


def python_blocks() -> list[str]:
    return re.findall(r"^```python\n(.*?)^```$", DOC.read_text(encoding="utf-8"), flags=re.S | re.M)


def expected_output(code: str) -> list[str]:
    return [line.rpartition("  # ")[2] for line in code.splitlines() if line.lstrip().startswith("print(")]


BLOCKS = python_blocks()


def test_the_page_has_its_examples():
    assert len(BLOCKS) == 4
    for code in BLOCKS:
        prints = [line for line in code.splitlines() if line.lstrip().startswith("print(")]
        assert prints and all("  # " in line for line in prints), "every print states its output"


@pytest.mark.parametrize("index", range(len(BLOCKS)), ids=[f"example{i}" for i in range(len(BLOCKS))])
def test_example_runs_and_prints_what_it_says(index, pg_url, schema, tmp_path):
    code = BLOCKS[index]
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KIT_", "OTEL_"))}
    env.update(DATABASE_URL=pg_url, KIT_SCHEMA=schema, PGOPTIONS=f"-c search_path={schema}", PYTHONUNBUFFERED="1")
    script = tmp_path / f"example{index}.py"
    script.write_text(code, encoding="utf-8")
    out = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=180)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == expected_output(code), out.stderr
