#!/bin/sh
# Installs what `make test-windows` needs on Debian 12: the MinGW-w64 cross compiler with POSIX
# threads (std::thread and thread_local need winpthreads) and Wine to run the result. Does
# nothing when both are present, so the Makefile may call it on every run.
set -eu

PACKAGES="g++-mingw-w64-x86-64-posix wine64"

missing=""
for p in $PACKAGES; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing="$missing $p"
  fi
done
[ -z "$missing" ] && exit 0

if [ "$(id -u)" != 0 ]; then
  echo "tools/windows/install.sh: missing packages:$missing" >&2
  echo "install them with:  sudo apt-get install -y --no-install-recommends$missing" >&2
  exit 1
fi

echo "tools/windows/install.sh: installing$missing" >&2
export DEBIAN_FRONTEND=noninteractive
# Other helpers may run apt at the same time: wait for the lock instead of failing. The package
# lists of a fresh machine are empty, so they are fetched once, here, only when installing.
apt-get -qq -o DPkg::Lock::Timeout=600 update
# shellcheck disable=SC2086
apt-get -qq -y -o DPkg::Lock::Timeout=600 install --no-install-recommends $missing >/dev/null
