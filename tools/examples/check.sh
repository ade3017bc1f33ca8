#!/usr/bin/env bash
# `make examples-check`: runs each example in tools/examples/ for real. reuseport_echo must echo
# over several connections and exit 0 on SIGINT; supervisor must restart a failing command and
# exit 0 on SIGTERM, with its child gone. Each step is bounded, so a hang fails in seconds.
set -euo pipefail

bin=${1:-build/bin}
tmp=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT

fail() {
  echo "examples-check: $*" >&2
  exit 1
}

# Waits up to 5 s for a line matching a pattern in a file.
await_line() {
  for _ in $(seq 100); do
    grep -q "$2" "$1" 2>/dev/null && return 0
    sleep 0.05
  done
  return 1
}

# Whether a process runs: it exists and is not a zombie waiting for this shell to reap it.
running() {
  local state
  state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
  [ -n "$state" ] && [ "$state" != Z ]
}

# Waits up to 5 s for a background process to exit and sets `status` to its exit status (137
# if it had to be killed). Not in a $(...) subshell: only this shell can wait for its children.
await_exit() {
  for _ in $(seq 100); do
    running "$1" || break
    sleep 0.05
  done
  kill -KILL "$1" 2>/dev/null || true
  status=0
  wait "$1" || status=$?
}

# reuseport_echo: three threads on a port the kernel picks.
"$bin/reuseport_echo" 0 3 >"$tmp/echo.out" 2>&1 &
echo_pid=$!
pids+=("$echo_pid")
await_line "$tmp/echo.out" "listening on" || fail "reuseport_echo did not start: $(cat "$tmp/echo.out")"
port=$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9]*\) .*/\1/p' "$tmp/echo.out")
[ -n "$port" ] || fail "reuseport_echo printed no port: $(cat "$tmp/echo.out")"
for i in 1 2 3 4 5 6 7 8; do
  exec 3<>"/dev/tcp/127.0.0.1/$port"
  printf 'hello %s\n' "$i" >&3
  IFS= read -r -t 5 reply <&3 || fail "reuseport_echo: no answer on connection $i"
  [ "$reply" = "hello $i" ] || fail "reuseport_echo answered '$reply' to 'hello $i'"
  exec 3>&-
done
exec 4<>"/dev/tcp/127.0.0.1/$port" # still open at the stop: the server closes it itself
kill -INT "$echo_pid"
await_exit "$echo_pid"
exec 4>&-
[ "$status" = 0 ] || fail "reuseport_echo exited with $status after SIGINT: $(cat "$tmp/echo.out")"
grep -q "reuseport_echo: stopped" "$tmp/echo.out" || fail "reuseport_echo did not say it stopped"
echo "examples-check: reuseport_echo echoed 8 connections over 3 threads and stopped on SIGINT"

# supervisor: the command fails twice (exit 3), is restarted, then runs until SIGTERM.
runs="$tmp/runs"
: >"$runs"
RUNS="$runs" "$bin/supervisor" sh -c \
  'echo $$ >>"$RUNS"; [ "$(wc -l <"$RUNS")" -ge 3 ] || exit 3; exec sleep 30' \
  >"$tmp/sup.out" 2>&1 &
sup_pid=$!
pids+=("$sup_pid")
for _ in $(seq 100); do
  [ "$(wc -l <"$runs")" -ge 3 ] && break
  sleep 0.05
done
[ "$(wc -l <"$runs")" -ge 3 ] || fail "supervisor did not restart its command: $(cat "$tmp/sup.out")"
child=$(sed -n 3p "$runs")
pids+=("$child")
running "$child" || fail "the supervised command is not running"
kill -TERM "$sup_pid"
await_exit "$sup_pid"
[ "$status" = 0 ] || fail "supervisor exited with $status after SIGTERM: $(cat "$tmp/sup.out")"
! running "$child" || fail "supervisor left its child $child running"
[ "$(grep -c 'exited with status 3' "$tmp/sup.out")" = 2 ] ||
  fail "supervisor did not report two failed runs: $(cat "$tmp/sup.out")"
grep -q "stopped after 2 restarts" "$tmp/sup.out" || fail "supervisor: $(cat "$tmp/sup.out")"
echo "examples-check: supervisor restarted a failing command twice and stopped it on SIGTERM"
