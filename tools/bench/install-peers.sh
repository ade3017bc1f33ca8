#!/bin/sh
# Installs the Debian packages the benchmarks compare against; does nothing when all are present.
# The library itself needs none of them: they exist only for `make bench`.
set -eu

PACKAGES="libuv1-dev libev-dev libevent-dev libasio-dev nim strace gnuplot-nox python3"

missing=""
for p in $PACKAGES; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing="$missing $p"
  fi
done
[ -z "$missing" ] && exit 0

if [ "$(id -u)" != 0 ]; then
  echo "install-peers.sh: missing packages:$missing" >&2
  echo "install them with:  sudo apt-get install -y$missing" >&2
  exit 1
fi

echo "install-peers.sh: installing$missing" >&2
export DEBIAN_FRONTEND=noninteractive
# Other helpers may run apt at the same time: wait for the lock instead of failing.
apt-get -qq -o DPkg::Lock::Timeout=600 update
# shellcheck disable=SC2086
apt-get -qq -y -o DPkg::Lock::Timeout=600 install --no-install-recommends $missing >/dev/null
