#!/usr/bin/env bash
# The smik-agent image, built the way users build it (podman build of
# daemonset/Dockerfile, unchanged) on a machine with no registry: the Debian
# 12 base images the Dockerfile names come from Debian's packages instead
# (mmdebstrap), imported under those names so FROM resolves with
# --pull=never.
#
#   images.sh SOURCE_DIR IMAGE_TAG
#
# Podman runs with the CONTAINERS_CONF and CONTAINERS_STORAGE_CONF of the
# caller (tests/install: a storage of its own per run, so the base images
# never replace a debian:12 the machine already has, and removing the run's
# storage removes every image it built).
set -euo pipefail
src="$1"
tag="$2"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# What Debian's official images (debuerreotype) add to a minbase system:
# apt keeps no downloaded packages or caches in image layers.
cat >"$work/docker-clean" <<'CONF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
CONF

# base NAME VARIANT-ARGS...: Debian 12 as image NAME, with merged /usr as the
# official images have it (without the hook apt picks usrmerge, and perl
# with it). An imported tarball has no config; PATH is the official one.
base() {
  local name="$1"
  shift
  local t0=$SECONDS tar="$work/${name/:/-}.tar"
  mmdebstrap --quiet --variant=minbase --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
    --customize-hook="upload $work/docker-clean /etc/apt/apt.conf.d/docker-clean" \
    --customize-hook='rm -rf "$1"/var/cache/apt/*.bin "$1"/var/lib/apt/lists/*' \
    "$@" bookworm "$tar" \
    "deb http://deb.debian.org/debian bookworm main" \
    "deb http://deb.debian.org/debian bookworm-updates main" \
    "deb http://deb.debian.org/debian-security bookworm-security main" >"$tar.log" 2>&1 ||
    { cat "$tar.log" >&2; return 1; }
  podman import --quiet \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["bash"]' "$tar" "docker.io/library/$name" >/dev/null
  rm -f "$tar"
  echo "base image $name: $((SECONDS - t0)) s"
}

# Both at once (each mostly waits for the mirror). debian:12-slim drops
# documentation, as the official one does.
base debian:12 &
full=$!
base debian:12-slim \
  --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
  --dpkgopt='path-include=/usr/share/doc/*/copyright' --dpkgopt='path-exclude=/usr/share/locale/*' \
  --dpkgopt='path-exclude=/usr/share/info/*'
wait "$full"

t0=$SECONDS
# Host network: the build stage's apt-get reaches the mirror without a
# container network set up on this machine.
# SMIK_IMAGE_CGROUP_PARENT: the cgroup its steps run under (.ci/run's of
# the lowest CPU weight); by default podman's own.
podman build --quiet --pull=never --network=host \
  ${SMIK_IMAGE_CGROUP_PARENT:+--cgroup-parent="$SMIK_IMAGE_CGROUP_PARENT"} \
  -f "$src/daemonset/Dockerfile" -t "$tag" "$src"
echo "image $tag: built in $((SECONDS - t0)) s," \
  "$(podman image inspect --format '{{.Size}}' "$tag") bytes"
