#!/bin/sh
# Installs the Debian packages a part of the build needs, by group; does nothing for what is
# installed already. The Makefile and .ci/run call it; the Makefile itself installs nothing.
#
#   sh tools/install.sh test      doctest, the tests' one third-party package
#   sh tools/install.sh check     everything `make check` runs: compilers, clang-format,
#                                 valgrind, libFuzzer, doxygen, the examples' clients (curl,
#                                 redis-cli), python3 (amalgamation), cmake and pkg-config
#                                 (install-check), and the windows group
#   sh tools/install.sh docs      doxygen, for `make docs`
#   sh tools/install.sh windows   the MinGW-w64 cross compiler (POSIX threads) and Wine
#   sh tools/install.sh bench     the peers `make bench` compares against (nginx, wrk and
#                                 redis-server among them), strace and gnuplot
set -eu

packages=""
for group in "$@"; do
  case "$group" in
  test) packages="$packages doctest-dev" ;;
  windows) packages="$packages g++-mingw-w64-x86-64-posix wine64" ;;
  docs) packages="$packages doxygen" ;;
  check)
    packages="$packages g++ clang clang-format make doctest-dev valgrind libclang-rt-dev doxygen"
    packages="$packages curl redis-tools"
    packages="$packages g++-mingw-w64-x86-64-posix wine64 python3 cmake pkg-config"
    ;;
  bench)
    packages="$packages libuv1-dev libev-dev libevent-dev libasio-dev nim strace gnuplot-nox python3"
    packages="$packages wrk nginx-light redis-server redis-tools"
    ;;
  *)
    echo "tools/install.sh: unknown group '$group' (test, check, windows, docs, bench)" >&2
    exit 2
    ;;
  esac
done

missing=""
for p in $packages; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    case " $missing " in *" $p "*) ;; *) missing="$missing $p" ;; esac
  fi
done
[ -z "$missing" ] && exit 0

if [ "$(id -u)" != 0 ]; then
  echo "tools/install.sh: missing packages:$missing" >&2
  echo "install them with:  sudo apt-get install -y --no-install-recommends$missing" >&2
  exit 1
fi

echo "tools/install.sh: installing$missing" >&2
export DEBIAN_FRONTEND=noninteractive
# A fresh machine has empty package lists: they are fetched once, here, only when installing.
# Another apt may hold the lock (a parallel job): wait for it instead of failing.
apt-get -qq -o DPkg::Lock::Timeout=600 update
# shellcheck disable=SC2086
apt-get -qq -y -o DPkg::Lock::Timeout=600 install --no-install-recommends $missing >/dev/null
# Debian starts redis-server's system service where an install may start services: the bench
# runs its own on ports of its own, so the system one is stopped to leave nothing running.
case " $missing " in
*" redis-server "*) service redis-server stop >/dev/null 2>&1 || true ;;
esac
