#!/usr/bin/env bash
# Builds the smik-agent image exactly as the install test does (images.sh:
# local Debian base images, `podman build` of daemonset/Dockerfile) and saves
# it as an archive (docker-archive: it keeps the tag), for a run of the
# install test that should not wait for the build: .ci/run builds it at the
# lowest priority beside the other tests, then runs
# `SMIK_INSTALL_IMAGE_ARCHIVE=OUT tests/run -L install`.
#
#   image-archive.sh OUT
#
# Podman gets a configuration and storage of this run's own, removed again on
# exit (the machine's images and containers are never touched); the settings
# are the install test's (tests/install/install_test.cpp, Runtime).
set -euo pipefail
src="$(cd "$(dirname "$0")/../.." && pwd)"
out="$(realpath -m "$1")"
dir="$(mktemp -d /var/tmp/smik-image-XXXXXX)"
cleanup() {
  local rc=$?
  if [ -f "$dir/storage.conf" ]; then
    podman rmi --all --force >/dev/null 2>&1 || true
    podman system reset --force >/dev/null 2>&1 || true
  fi
  # overlay mounts podman could not take down would keep rm from finishing
  grep -o " $dir/[^ ]*" /proc/self/mountinfo | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
  rm -rf "$dir"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 143' TERM INT  # through cleanup: .ci/run stops a build it no longer needs
mkdir -p "$dir/tmp"
cat >"$dir/containers.conf" <<CONF
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=1000:1000"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "$dir/events.log"
tmp_dir = "$dir/tmp"
CONF
printf '[storage]\ndriver = "overlay"\ngraphroot = "%s/storage"\nrunroot = "%s/run"\n' "$dir" "$dir" \
  >"$dir/storage.conf"
export CONTAINERS_CONF="$dir/containers.conf" CONTAINERS_STORAGE_CONF="$dir/storage.conf"
export TMPDIR="$dir/tmp"
tag=localhost/smik-agent:dev
"$src/tests/install/images.sh" "$src" "$tag"
rm -f "$out"
podman save --quiet --format docker-archive --output "$out" "$tag"
echo "saved $tag to $out ($(stat -c %s "$out") bytes)"
