#!/usr/bin/env bash
# Run the whole test suite from a fresh clone: installs what's missing, then runs pytest.
#   bash scripts/test.sh                 # everything
#   bash scripts/test.sh -k foo -x       # extra pytest args are passed through
#   KIT_TEST_SERVERS=pgserver16 bash scripts/test.sh   # only one PostgreSQL server
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/setup.sh

# Same interpreter choice as scripts/setup.sh.
if [ -n "${PYTHON:-}" ]; then PY="$PYTHON"
elif [ -x .venv/bin/python ]; then PY=.venv/bin/python
elif command -v python >/dev/null 2>&1; then PY=python
else PY=python3
fi

# Lint first: ruff-clean is part of the suite (only when running everything).
if [ "$#" -eq 0 ]; then
    "$PY" -m ruff check . || { echo "[test] ruff found problems" >&2; exit 1; }
fi

set +e
"$PY" -m pytest -q "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
    echo "[test] pytest collected no tests: treating as failure" >&2
    exit 1
fi
exit "$rc"
