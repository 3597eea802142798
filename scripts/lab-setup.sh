#!/usr/bin/env bash
# Prepare the HA chaos labs (docs/lab.md) on Debian 12: idempotent, fast when everything is there.
#   bash scripts/lab-setup.sh [all|postgres|citus]     # which labs (default all; or KIT_LABS=...)
#   - apt: docker.io, docker-compose, debootstrap (and golang-go when no Go toolchain exists)
#   - starts dockerd in the background when no Docker engine answers
#   - pip install -e ".[lab]" (docker, toxiproxy-python) into the project virtual environment .venv (scripts/venv.sh)
#   - images: debian:bookworm-slim (pulled, or debootstrapped + docker import), toxiproxy (official image,
#     or built from `go install github.com/Shopify/toxiproxy/v2/cmd/server@v2.12.0`), and the
#     etcd/PostgreSQL 15/Patroni 3.1.2 image (Patroni wheels fetched on the host, installed --no-index);
#     for the Citus lab (compose/citus-ha) also that image plus Citus 13.2.2 compiled inside `docker build`
#     from the vendored tarball (../shared/vendor or $KIT_VENDOR_DIR, sha256 checked, copied into a
#     temporary build context)
# Exit codes: 0 ready; 3 no Docker engine can run here (the chaos tests then skip with that reason);
# anything else: a setup step failed. Without the Citus tarball, `all` prepares the PostgreSQL lab only and
# says so (the Citus lab tests then skip with that reason); `citus` fails.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO="$(pwd)"
LAB="$REPO/compose/postgres-ha"
CITUS_LAB="$REPO/compose/citus-ha"
PATRONI_IMAGE="kit-lab/patroni:3.1.2-pg15"
CITUS_IMAGE="kit-lab/citus:13.2.2-pg15"
CITUS_VERSION="13.2.2"
CITUS_SHA256="c8fc76dc8294636a52b1a0dd75a20d8b4a36937df6443e30ca84d8d0464a6bb9"
VENDOR="${KIT_VENDOR_DIR:-$REPO/../shared/vendor}"
OFFICIAL_TOXIPROXY="ghcr.io/shopify/toxiproxy:2.12.0"
LOCAL_TOXIPROXY="kit-lab/toxiproxy:2.12.0"
TOXIPROXY_VERSION="v2.12.0"

say() { echo "[lab-setup] $*"; }

LABS="${1:-${KIT_LABS:-all}}"
case "$LABS" in
all) WANT_CITUS=1; CITUS_REQUIRED=0 ;;
postgres|postgres-ha) WANT_CITUS=0; CITUS_REQUIRED=0 ;;
citus|citus-ha) WANT_CITUS=1; CITUS_REQUIRED=1 ;;
*) echo "lab-setup: error: unknown lab '$LABS' (choose all, postgres or citus)" >&2; exit 2 ;;
esac
no_engine() {
    say "NO DOCKER ENGINE: $*" >&2
    say "the chaos lab cannot run on this machine; pytest chaos/ will skip with this reason" >&2
    exit 3
}

if [ "$(id -u)" -eq 0 ]; then SUDO=()
elif command -v sudo >/dev/null 2>&1; then SUDO=(sudo)
else SUDO=()
fi

# The project virtual environment, as in scripts/setup.sh (nothing is installed outside .venv).
# shellcheck source=scripts/venv.sh
. scripts/venv.sh
kit_venv

# -- Debian packages ----------------------------------------------------------------------------------
export PATH="$PATH:/usr/local/go/bin:${HOME:-/root}/go/bin"
apt_pkgs=()
command -v dockerd >/dev/null 2>&1 || docker info >/dev/null 2>&1 || apt_pkgs+=(docker.io)
if ! command -v docker-compose >/dev/null 2>&1 && ! docker compose version >/dev/null 2>&1; then
    apt_pkgs+=(docker-compose)
fi
command -v debootstrap >/dev/null 2>&1 || apt_pkgs+=(debootstrap)
command -v go >/dev/null 2>&1 || apt_pkgs+=(golang-go)
if [ "${#apt_pkgs[@]}" -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ] && [ "${#SUDO[@]}" -eq 0 ]; then
        say "ERROR: need ${apt_pkgs[*]} but not root and no sudo" >&2
        exit 1
    fi
    say "installing: ${apt_pkgs[*]}"
    "${SUDO[@]}" apt-get update -qq
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${apt_pkgs[@]}" \
        >/dev/null || no_engine "apt-get install ${apt_pkgs[*]} failed"
fi

# -- Docker engine ------------------------------------------------------------------------------------
if ! docker info >/dev/null 2>&1; then
    command -v dockerd >/dev/null 2>&1 || no_engine "dockerd is not installed and could not be installed"
    if [ "$(id -u)" -ne 0 ] && [ "${#SUDO[@]}" -eq 0 ]; then no_engine "dockerd must be started as root"; fi
    log=/var/log/kit-lab-dockerd.log
    say "starting dockerd in the background (log: $log)"
    "${SUDO[@]}" sh -c "nohup dockerd >$log 2>&1 &"
    for _ in $(seq 1 60); do
        [ -S /var/run/docker.sock ] && docker info >/dev/null 2>&1 && break
        sleep 0.5
    done
    docker info >/dev/null 2>&1 || no_engine "dockerd did not come up: $(tail -n 3 "$log" 2>/dev/null | tr '\n' ' ')"
fi
if command -v docker-compose >/dev/null 2>&1; then COMPOSE=(docker-compose)
elif docker compose version >/dev/null 2>&1; then COMPOSE=(docker compose)
else no_engine "no compose tool (docker-compose or the docker compose plugin)"
fi
say "engine $(docker version --format '{{.Server.Version}}'), compose: ${COMPOSE[*]}"

# -- Python packages for the lab controller -----------------------------------------------------------
if ! "$PY" -c "import docker, toxiproxy" >/dev/null 2>&1; then
    kit_venv_install "test,lab,sqlalchemy,otel,prometheus"
fi

# -- images -------------------------------------------------------------------------------------------
bash "$LAB/make-base-image.sh"

have_image() { docker image inspect "$1" >/dev/null 2>&1; }
# docker build, its output shown only when it fails (the legacy builder's deprecation notice is noise).
quiet_build() {
    local out
    out="$(mktemp)"
    if ! docker build "$@" >"$out" 2>&1; then
        tail -n 30 "$out" >&2
        rm -f "$out"
        say "ERROR: docker build $* failed" >&2
        exit 1
    fi
    rm -f "$out"
}
toxiproxy_image=""
if have_image "$OFFICIAL_TOXIPROXY"; then toxiproxy_image="$OFFICIAL_TOXIPROXY"
elif have_image "$LOCAL_TOXIPROXY"; then toxiproxy_image="$LOCAL_TOXIPROXY"
elif timeout 120 docker pull -q "$OFFICIAL_TOXIPROXY" >/dev/null 2>&1; then toxiproxy_image="$OFFICIAL_TOXIPROXY"
else
    bin="$LAB/toxiproxy/bin"
    mkdir -p "$bin"
    if [ ! -x "$bin/toxiproxy-server" ] || [ ! -x "$bin/toxiproxy-cli" ]; then
        command -v go >/dev/null 2>&1 || { say "ERROR: no Go toolchain to build toxiproxy" >&2; exit 1; }
        say "building toxiproxy $TOXIPROXY_VERSION with $(go version | awk '{print $3}')"
        gobin="$(mktemp -d)"
        (cd /tmp && GOBIN="$gobin" GOTOOLCHAIN="${GOTOOLCHAIN:-auto}" go install \
            "github.com/Shopify/toxiproxy/v2/cmd/server@$TOXIPROXY_VERSION" \
            "github.com/Shopify/toxiproxy/v2/cmd/cli@$TOXIPROXY_VERSION") \
            || { say "ERROR: go install of toxiproxy failed (it needs Go >= 1.23)" >&2; exit 1; }
        install -m 0755 "$gobin/server" "$bin/toxiproxy-server"
        install -m 0755 "$gobin/cli" "$bin/toxiproxy-cli"
        rm -rf "$gobin"
    fi
    say "building $LOCAL_TOXIPROXY (no registry reachable)"
    quiet_build -t "$LOCAL_TOXIPROXY" "$LAB/toxiproxy"
    toxiproxy_image="$LOCAL_TOXIPROXY"
fi
# compose reads .env: a plain `docker-compose up` in compose/postgres-ha (or citus-ha) then uses the same image.
echo "KIT_LAB_TOXIPROXY_IMAGE=$toxiproxy_image" > "$LAB/.env"
echo "KIT_LAB_TOXIPROXY_IMAGE=$toxiproxy_image" > "$CITUS_LAB/.env"
say "toxiproxy image: $toxiproxy_image"

if ! ls "$LAB"/wheels/patroni-3.1.2-*.whl >/dev/null 2>&1 || ! ls "$LAB"/wheels/ydiff-1.2-*.whl >/dev/null 2>&1; then
    say "fetching Patroni 3.1.2 wheels on the host (containers can't reach PyPI over HTTPS)"
    mkdir -p "$LAB/wheels"
    "$PY" -m pip wheel -q --disable-pip-version-check --no-deps -w "$LAB/wheels" patroni==3.1.2 ydiff==1.2
fi
# Rebuild the Patroni image only when its inputs changed (cached between runs otherwise).
inputs="$(cd "$LAB" && cat Dockerfile entrypoint.sh && ls wheels/*.whl && docker image inspect -f '{{.Id}}' debian:bookworm-slim)"
digest="$(printf '%s' "$inputs" | sha256sum | cut -c1-16)"
current="$(docker image inspect -f '{{index .Config.Labels "kit.lab.inputs"}}' "$PATRONI_IMAGE" 2>/dev/null || true)"
if [ "$current" != "$digest" ]; then
    say "building $PATRONI_IMAGE (PostgreSQL 15, etcd, Patroni 3.1.2; about a minute)"
    quiet_build --label "kit.lab.inputs=$digest" -t "$PATRONI_IMAGE" "$LAB"
else
    say "$PATRONI_IMAGE up to date"
fi

# -- the Citus lab's image: the Patroni image + Citus compiled from the vendored tarball ---------------------
if [ "$WANT_CITUS" -eq 1 ]; then
    tarball="$VENDOR/citus-$CITUS_VERSION.tar.gz"
    if [ ! -f "$tarball" ]; then
        if [ "$CITUS_REQUIRED" -eq 1 ]; then
            say "ERROR: no Citus source at $tarball (set KIT_VENDOR_DIR)" >&2
            exit 1
        fi
        say "no Citus source at $tarball (set KIT_VENDOR_DIR): the Citus lab is not prepared, its tests will skip" >&2
    else
        echo "$CITUS_SHA256  $tarball" | sha256sum -c --status || {
            say "ERROR: sha256 of $tarball does not match $CITUS_SHA256" >&2
            exit 1
        }
        inputs="$(cd "$CITUS_LAB" && cat Dockerfile entrypoint.sh && echo "$CITUS_SHA256" \
            && docker image inspect -f '{{.Id}}' "$PATRONI_IMAGE" debian:bookworm-slim)"
        digest="$(printf '%s' "$inputs" | sha256sum | cut -c1-16)"
        current="$(docker image inspect -f '{{index .Config.Labels "kit.lab.inputs"}}' "$CITUS_IMAGE" 2>/dev/null || true)"
        if [ "$current" != "$digest" ]; then
            # The vendor folder may be read-only and is not this repo's: build from a temporary context.
            ctx="$(mktemp -d /tmp/kit-citus-image.XXXXXX)"
            trap 'rm -rf "$ctx"' EXIT
            cp "$CITUS_LAB/Dockerfile" "$CITUS_LAB/entrypoint.sh" "$ctx/"
            cp "$tarball" "$ctx/citus-$CITUS_VERSION.tar.gz"
            say "building $CITUS_IMAGE (Citus $CITUS_VERSION compiled in the image; about 3 minutes cold)"
            quiet_build --build-arg "BASE_IMAGE=$PATRONI_IMAGE" --label "kit.lab.inputs=$digest" -t "$CITUS_IMAGE" "$ctx"
            rm -rf "$ctx"
            trap - EXIT
        else
            say "$CITUS_IMAGE up to date"
        fi
    fi
fi
say "ready"
