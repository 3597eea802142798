#!/usr/bin/env bash
# The main job from a fresh clone: install kit, then run `kit demo` on the embedded PostgreSQL.
#   bash scripts/demo.sh [kit demo options, e.g. --orders 9]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh --python-only >&2
if [ -n "${PYTHON:-}" ]; then PY="$PYTHON"
elif [ -x .venv/bin/python ]; then PY=.venv/bin/python
elif command -v python >/dev/null 2>&1; then PY=python
else PY=python3
fi
exec "$PY" -m kit.cli demo "$@"
