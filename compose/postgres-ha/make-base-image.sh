#!/usr/bin/env bash
# Create the image debian:bookworm-slim when it is missing and cannot be pulled (no container registry):
# debootstrap a minimal Debian 12 from the host's own apt mirror and `docker import` it.
#   bash compose/postgres-ha/make-base-image.sh          # no-op when the image exists or can be pulled
set -euo pipefail

IMAGE="debian:bookworm-slim"
say() { echo "[base-image] $*"; }

if docker image inspect "$IMAGE" >/dev/null 2>&1; then
    say "$IMAGE present"
    exit 0
fi
if timeout 60 docker pull -q "$IMAGE" >/dev/null 2>&1; then
    say "$IMAGE pulled"
    exit 0
fi
command -v debootstrap >/dev/null 2>&1 || { say "ERROR: debootstrap missing (apt-get install debootstrap)" >&2; exit 1; }

# The mirror the host already uses (deb822 .sources or classic sources.list), else deb.debian.org.
mirror="$(grep -hsE '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' | grep -v security | head -n1 || true)"
if [ -z "$mirror" ]; then
    mirror="$(grep -hsE '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
        | awk '{for (i = 2; i <= NF; i++) if ($i ~ /^https?:/) {print $i; exit}}' | grep -v security | head -n1 || true)"
fi
mirror="${mirror:-http://deb.debian.org/debian}"

dir="$(mktemp -d /tmp/kit-bookworm.XXXXXX)"
trap 'rm -rf "$dir"' EXIT
say "debootstrap bookworm from $mirror (about 30 s)"
debootstrap --variant=minbase bookworm "$dir" "$mirror" >/dev/null
# Slim it the way the official -slim image is slimmed: no apt lists/caches, docs, man pages, locales.
rm -rf "$dir"/var/lib/apt/lists/* "$dir"/var/cache/apt/*.bin "$dir"/var/cache/apt/archives/*.deb \
       "$dir"/usr/share/doc/* "$dir"/usr/share/man/* "$dir"/usr/share/info/* "$dir"/var/log/*.log
find "$dir"/usr/share/locale -mindepth 1 -maxdepth 1 ! -name 'locale.alias' -exec rm -rf {} + 2>/dev/null || true
# Same apt source as the host mirror, so `apt-get update` inside builds works.
printf 'deb %s bookworm main\ndeb %s bookworm-updates main\n' "$mirror" "$mirror" > "$dir/etc/apt/sources.list"
cat > "$dir/etc/dpkg/dpkg.cfg.d/excludes" <<'CFG'
path-exclude /usr/share/doc/*
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
CFG
tar -C "$dir" -c . | docker import -c 'CMD ["bash"]' - "$IMAGE" >/dev/null
say "created $IMAGE ($(docker image inspect -f '{{.Size}}' "$IMAGE" | awk '{printf "%.0f MB", $1/1e6}'))"
