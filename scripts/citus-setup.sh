#!/usr/bin/env bash
# Build and install Citus 13.2.2 into Debian's PostgreSQL 15 from the vendored source tarball, once.
#   bash scripts/citus-setup.sh            # no-op when citus is already installed for PostgreSQL 15
#
# No package registry serves Citus here, so its source ships beside the project (../shared/vendor, or
# $KIT_VENDOR_DIR): the sha256 is checked, the tarball is extracted to a temporary directory (the vendor
# folder may be read-only), and the one-line header fix that PostgreSQL 15.20's headers need is applied.
# Exit codes: 0 installed (or already there), 1 failure, 3 the tarball is missing (tests then skip Citus
# with that reason).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

say() { echo "[citus-setup] $*"; }

CITUS_VERSION=13.2.2
CITUS_SHA256=c8fc76dc8294636a52b1a0dd75a20d8b4a36937df6443e30ca84d8d0464a6bb9
PG_BIN=/usr/lib/postgresql/15/bin
VENDOR="${KIT_VENDOR_DIR:-$(pwd)/../shared/vendor}"
TARBALL="$VENDOR/citus-$CITUS_VERSION.tar.gz"

# A marker beside citus.so records which source was built (pg_config alone cannot tell 13.2.2 from 13.2.x).
if [ -x "$PG_BIN/pg_config" ]; then
    pkglib="$("$PG_BIN/pg_config" --pkglibdir)"
    if [ -f "$pkglib/citus.so" ] && grep -qsx "$CITUS_SHA256" "$pkglib/citus.kit-build"; then
        say "Citus $CITUS_VERSION already installed for PostgreSQL 15 ($pkglib/citus.so)"
        exit 0
    fi
fi

if [ ! -f "$TARBALL" ]; then
    say "no Citus source at $TARBALL (set KIT_VENDOR_DIR): Citus tests will be skipped" >&2
    exit 3
fi
echo "$CITUS_SHA256  $TARBALL" | sha256sum -c --status || {
    say "ERROR: sha256 of $TARBALL does not match $CITUS_SHA256" >&2
    exit 1
}

if [ "$(id -u)" -eq 0 ]; then SUDO=(); elif command -v sudo >/dev/null 2>&1; then SUDO=(sudo); else SUDO=(); fi
pkgs=(postgresql-15 postgresql-server-dev-15 build-essential flex bison libcurl4-openssl-dev liblz4-dev
      libzstd-dev libkrb5-dev libssl-dev libselinux1-dev libxslt1-dev libpam0g-dev libreadline-dev)
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    say "installing build dependencies: ${missing[*]}"
    "${SUDO[@]}" apt-get update -qq
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
tar -xzf "$TARBALL" -C "$work"
src="$work/citus-$CITUS_VERSION"
# PostgreSQL 15.20 exports have_createdb_privilege(); Citus's compatibility header defines a static copy of
# it for PostgreSQL 15. Rename the copy (definition + a macro for its caller); harmless on older headers.
compat="$src/src/include/pg_version_compat.h"
if grep -q '^have_createdb_privilege(void)$' "$compat"; then
    sed -i 's/^have_createdb_privilege(void)$/citus_compat_have_createdb_privilege(void)/' "$compat"
    sed -i 's/^#include "catalog\/pg_authid.h"$/#include "catalog\/pg_authid.h"\n#define have_createdb_privilege() citus_compat_have_createdb_privilege()/' "$compat"
fi
say "building Citus $CITUS_VERSION against $("$PG_BIN/pg_config" --version) (about a minute)"
(
    cd "$src"
    PG_CONFIG="$PG_BIN/pg_config" ./configure --quiet >"$work/configure.log" 2>&1 || { tail -30 "$work/configure.log"; exit 1; }
    make -s -j"$(nproc)" >"$work/make.log" 2>&1 || { tail -40 "$work/make.log"; exit 1; }
    "${SUDO[@]}" make -s install >"$work/install.log" 2>&1 || { tail -20 "$work/install.log"; exit 1; }
)
pkglib="$("$PG_BIN/pg_config" --pkglibdir)"
echo "$CITUS_SHA256" | "${SUDO[@]}" tee "$pkglib/citus.kit-build" >/dev/null
say "installed: $pkglib/citus.so"
