#!/bin/sh
# Installs the Debian packages the test suite needs (oracles and runtimes; a C compiler for
# src/ns's native helper tsimage-run), when missing.
# Idempotent and fast when everything is present. Needs root to install.
set -eu
PKGS="gcc libc6-dev buildah skopeo podman docker-registry runc umoci busybox-static jq pigz zstd uidmap openssl curl file iproute2 apache2-utils gpg gpgv gpg-agent"
# binary that proves each package is present
have() {
  case "$1" in
    docker-registry) command -v docker-registry >/dev/null 2>&1 ;;
    busybox-static) [ -x /bin/busybox ] && file -L /bin/busybox 2>/dev/null | grep -q 'statically linked' ;;
    uidmap) command -v newuidmap >/dev/null 2>&1 ;;
    iproute2) command -v ip >/dev/null 2>&1 ;;
    apache2-utils) command -v htpasswd >/dev/null 2>&1 ;;
    gpg-agent) command -v gpg-agent >/dev/null 2>&1 || [ -x /usr/lib/gnupg/gpg-agent ] ;;
    gcc) command -v cc >/dev/null 2>&1 || command -v gcc >/dev/null 2>&1 ;;
    libc6-dev) [ -f /usr/include/stdio.h ] ;;
    *) command -v "$1" >/dev/null 2>&1 ;;
  esac
}
# `file` itself is needed by have(); check it by name first
missing=""
for p in $PKGS; do
  if [ "$p" = file ]; then command -v file >/dev/null 2>&1 || missing="$missing $p"; continue; fi
  have "$p" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "install-test-deps: missing Debian packages:$missing" >&2
    echo "install-test-deps: run as root, or: sudo apt-get install -y$missing" >&2
    exit 1
  fi
  echo "install-test-deps: installing:$missing" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  # shellcheck disable=SC2086
  apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi
# podman/buildah on this machine kind: runc (crun fails on hybrid cgroups), ulimits, no network
if [ "$(id -u)" = 0 ] && [ -d /etc/containers ]; then
  conf=/etc/containers/containers.conf
  if ! grep -q 'tsimage-managed' "$conf" 2>/dev/null; then
    cat > "$conf" <<'CONF'
# tsimage-managed: settings podman 4.3 / buildah 1.28 need on this machine kind
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
netns = "none"
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
CONF
  fi
fi
echo "install-test-deps: ok" >&2
