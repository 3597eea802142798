#!/usr/bin/env bash
# Run the whole test suite from a fresh clone: installs what's missing (kit and its test dependencies into
# the project virtual environment .venv, scripts/setup.sh), then runs ruff and pytest from .venv.
#   bash scripts/test.sh                 # everything
#   bash scripts/test.sh -k foo -x       # extra pytest args are passed through
#   KIT_TEST_SERVERS=pgserver16 bash scripts/test.sh   # only one PostgreSQL server
#   KIT_TEST_TARGETS=none bash scripts/test.sh          # no extra backend targets (Citus, ...)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/setup.sh

# Everything runs in the project virtual environment that scripts/setup.sh made (.venv in this checkout).
PY="${KIT_VENV:-.venv}/bin/python"
echo "[test] using $PY ($("$PY" -V 2>&1))"

# Lint first: ruff-clean is part of the suite (only when running everything).
if [ "$#" -eq 0 ]; then
    "$PY" -m ruff check . || { echo "[test] ruff found problems" >&2; exit 1; }
fi

# The suite waits more than it computes (servers, worker processes, leases): it runs in parallel processes
# (pytest-xdist; each starts its own servers). KIT_TEST_WORKERS=0 runs it in this process.
set +e
"$PY" -m pytest -q -n "${KIT_TEST_WORKERS:-4}" "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
    echo "[test] pytest collected no tests: treating as failure" >&2
    exit 1
fi

# Everything (no arguments): then the HA chaos lab for real (docs/lab.md). scripts/lab-setup.sh installs
# Docker & co. and builds the images; exit code 3 means no Docker engine can run here, and pytest chaos/
# then skips every scenario with that reason. KIT_LAB_WORKFLOWS scales the workload (default 1000).
if [ "$#" -eq 0 ] && [ "${KIT_SKIP_CHAOS:-0}" != "1" ]; then
    lab_rc=0
    bash scripts/lab-setup.sh || lab_rc=$?
    if [ "$lab_rc" -ne 0 ] && [ "$lab_rc" -ne 3 ]; then
        echo "[test] chaos lab setup failed (exit $lab_rc)" >&2
        exit 1
    fi
    set +e
    "$PY" -m pytest -q -p no:cacheprovider chaos/
    chaos_rc=$?
    set -e
    if [ "$chaos_rc" -eq 5 ]; then
        echo "[test] pytest chaos/ collected no tests: treating as failure" >&2
        chaos_rc=1
    fi
    [ "$rc" -ne 0 ] || rc="$chaos_rc"
fi
exit "$rc"
