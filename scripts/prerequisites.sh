#!/usr/bin/env bash
# Makes sure the system packages the tests and the demo need are present:
# containerd, runc and a static busybox (for container root filesystems).
# As root with apt it installs what is missing; otherwise it says exactly what to install.
set -euo pipefail

missing=()
command -v containerd >/dev/null 2>&1 || missing+=(containerd)
command -v runc >/dev/null 2>&1 || missing+=(runc)
# a dynamically linked busybox cannot run inside a bare rootfs: require the static one
if [ ! -x /bin/busybox ] || ldd /bin/busybox >/dev/null 2>&1; then
  missing+=(busybox-static)
fi

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "prerequisites: installing ${missing[*]} with apt-get" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq "${missing[@]}" >&2
  exit 0
fi

echo "prerequisites: missing system packages: ${missing[*]}" >&2
echo "  install them as root:  apt-get install -y ${missing[*]}" >&2
if [ "$(id -u)" != "0" ]; then
  echo "  (the tests and the demo also run containerd and must run as root)" >&2
fi
exit 1
