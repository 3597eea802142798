#!/usr/bin/env bash
# Idempotent test-environment installer for Debian 12 (run as root, or as a user with sudo).
#   - the project virtual environment .venv in this checkout (scripts/venv.sh), kit installed there with
#     pip install -e ".[test,lab,sqlalchemy,otel,prometheus]" (lab: the chaos lab's Docker and toxiproxy
#     clients; sqlalchemy, otel, prometheus: the integrations' tests, docs/integrations.md); nothing is
#     installed into a global interpreter, and an existing kit installation elsewhere is left alone
#   - Debian packages: postgresql-15 + postgresql-contrib (second real server for the tests), tmux
#   - Citus 13.2.2 built from ../shared/vendor into PostgreSQL 15 (scripts/citus-setup.sh), once
# Safe to run repeatedly: apt and pip are only touched when something is missing or changed.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

# --python-only: just what `kit demo` needs (kit in .venv; its embedded PostgreSQL comes from PyPI).
PYTHON_ONLY=0
[ "${1:-}" = "--python-only" ] && PYTHON_ONLY=1

say() { echo "[setup] $*"; }

if [ "$(id -u)" -eq 0 ]; then
    SUDO=()
elif command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo)
else
    SUDO=()
fi

PG_BIN=/usr/lib/postgresql/15/bin
apt_pkgs=()
if [ "$PYTHON_ONLY" -eq 0 ]; then
    [ -x "$PG_BIN/postgres" ] || apt_pkgs+=(postgresql-15 postgresql-contrib)
    command -v tmux >/dev/null 2>&1 || apt_pkgs+=(tmux)
    command -v runuser >/dev/null 2>&1 || apt_pkgs+=(util-linux)
fi

if [ "${#apt_pkgs[@]}" -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ] && [ "${#SUDO[@]}" -eq 0 ]; then
        say "ERROR: need to install ${apt_pkgs[*]} but not root and no sudo" >&2
        exit 1
    fi
    pg_was_missing=0
    [ -x "$PG_BIN/postgres" ] || pg_was_missing=1
    # Clusters running before we install anything belong to someone else: never stop those.
    running_before=""
    if command -v pg_lsclusters >/dev/null 2>&1; then
        running_before="$(pg_lsclusters --no-header 2>/dev/null | awk '$4 ~ /^online/ {print $1 "/" $2}' || true)"
    fi
    say "installing: ${apt_pkgs[*]}"
    "${SUDO[@]}" apt-get update -qq
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "${apt_pkgs[@]}" >/dev/null
    # The postgresql package creates and starts a default cluster (15/main on port 5432). The tests
    # never use it (they start private servers on free ports); stop it if *we* just started it.
    if [ "$pg_was_missing" -eq 1 ] && command -v pg_lsclusters >/dev/null 2>&1; then
        while read -r ver name; do
            [ -n "$ver" ] || continue
            if ! grep -qx "$ver/$name" <<<"$running_before"; then
                say "stopping default cluster $ver/$name started by the package install (tests don't use it)"
                "${SUDO[@]}" pg_ctlcluster "$ver" "$name" stop || say "warning: could not stop cluster $ver/$name"
            fi
        done < <(pg_lsclusters --no-header 2>/dev/null | awk '$4 ~ /^online/ {print $1, $2}')
    fi
elif [ "$PYTHON_ONLY" -eq 0 ]; then
    say "system packages present (postgresql-15, tmux)"
fi
if command -v pg_lsclusters >/dev/null 2>&1; then
    others="$(pg_lsclusters --no-header 2>/dev/null | awk '$4 ~ /^online/ {print $1 "/" $2 " (port " $3 ")"}' || true)"
    [ -z "$others" ] || say "note: system cluster(s) running, left alone (tests don't use them): $others"
fi

# Python: the project virtual environment, kit installed into it (editable: this checkout).
# shellcheck source=scripts/venv.sh
. scripts/venv.sh
kit_venv
if [ "$PYTHON_ONLY" -eq 1 ]; then kit_venv_install ""; else kit_venv_install "test,lab,sqlalchemy,otel,prometheus"; fi
say "kit runs from $KIT_VENV: $KIT_VENV/bin/kit, or \`source $KIT_VENV/bin/activate\` and then kit"
# Citus (the sharded backend's test cluster): built once from the vendored source into PostgreSQL 15.
# Exit 3 means the tarball is not beside the clone: the Citus tests then skip with that reason.
if [ "$PYTHON_ONLY" -eq 0 ]; then
    citus_rc=0
    bash scripts/citus-setup.sh || citus_rc=$?
    if [ "$citus_rc" -ne 0 ] && [ "$citus_rc" -ne 3 ]; then
        say "ERROR: building Citus failed (exit $citus_rc)" >&2
        exit 1
    fi
fi
say "done"
