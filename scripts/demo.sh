#!/usr/bin/env bash
# The main job from a fresh clone: create the project virtual environment .venv in this checkout, install
# kit into it (nothing is installed anywhere else), then run `kit demo` on the embedded PostgreSQL.
#   bash scripts/demo.sh [kit demo options, e.g. --orders 9]
# Afterwards `source .venv/bin/activate` puts this checkout's `kit` on PATH (or call .venv/bin/kit).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh --python-only >&2
echo "[demo] .venv/bin/kit demo $*" >&2
exec .venv/bin/python -m kit.cli demo "$@"
