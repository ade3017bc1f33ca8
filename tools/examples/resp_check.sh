#!/usr/bin/env bash
# `make resp-check`, part of examples-check: resp_server against redis-cli (Debian redis-tools)
# and raw bytes. Each command must answer as Redis answers; a key set with EX shows its TTL and one
# set with PX is gone after its deadline; pipelined and inline requests are answered in order; a
# malformed request gets a protocol error and its connection is closed while the server goes on
# serving; SIGTERM stops the server with exit status 0. Each step is bounded.
set -euo pipefail

bin=${1:-build/bin}
tmp=$(mktemp -d)
pid=
cleanup() {
  [ -z "$pid" ] || kill -KILL "$pid" 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT

fail() {
  echo "resp-check: $*" >&2
  [ ! -f "$tmp/server.out" ] || sed 's/^/resp-check: server: /' "$tmp/server.out" >&2
  exit 1
}

# Whether a process runs: it exists and is not a zombie waiting for this shell to reap it.
running() {
  local state
  state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
  [ -n "$state" ] && [ "$state" != Z ]
}

command -v redis-cli >/dev/null || fail "redis-cli is missing: sh tools/install.sh check"

"$bin/resp_server" 0 >"$tmp/server.out" 2>&1 &
pid=$!
for _ in $(seq 100); do
  grep -q "listening on" "$tmp/server.out" && break
  sleep 0.05
done
port=$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$tmp/server.out")
[ -n "$port" ] || fail "resp_server did not start"

# One command through redis-cli, which prints a reply without its type (nil as an empty line).
expect() {
  local want=$1 got
  shift
  got=$(timeout 5 redis-cli -p "$port" "$@" 2>&1) || fail "redis-cli $* failed: $got"
  [ "$got" = "$want" ] || fail "$* answered '$got', not '$want'"
}

expect PONG PING
expect hello PING hello
expect "hello world" ECHO "hello world"
expect OK SET greeting hi
expect hi GET greeting
expect "" GET missing
expect OK SET greeting "hi again"
expect "hi again" get greeting
expect 1 EXISTS greeting
expect 2 EXISTS greeting greeting missing
expect 1 DEL greeting missing
expect 0 EXISTS greeting
expect 1 INCR counter
expect 2 incr counter
expect OK SET big 9223372036854775807
expect "ERR increment or decrement would overflow" INCR big
expect "ERR wrong number of arguments for 'incr' command" INCR counter x
expect OK SET word abc
expect "ERR value is not an integer or out of range" INCR word
expect "ERR wrong number of arguments for 'get' command" GET
expect "ERR unknown command 'NOPE', with args beginning with: 'a' 'b' " NOPE a b
expect "ERR syntax error" SET k v BOGUS
expect "ERR syntax error" SET k v EX
expect "ERR invalid expire time in 'set' command" SET k v EX 0
expect "ERR invalid expire time in 'set' command" SET k v PX -5
expect "ERR value is not an integer or out of range" SET k v EX soon
echo "resp-check: PING, ECHO, SET, GET, DEL, EXISTS, INCR and their errors answer as Redis does"

# TTL: -2 without the key, -1 without a deadline; EXPIRE sets one and SET clears it.
expect -2 TTL missing
expect OK SET session data EX 100
expect 100 TTL session
expect OK SET session data
expect -1 TTL session
expect 1 EXPIRE session 50
expect 50 TTL session
expect 0 EXPIRE missing 50
expect 1 EXPIRE session 0
expect 0 EXISTS session
# A key set with PX is there before its deadline and gone after it.
expect OK SET brief soon PX 300
expect soon GET brief
sleep 0.6
expect "" GET brief
expect -2 TTL brief
expect 0 EXISTS brief
echo "resp-check: TTL, EXPIRE and SET EX/PX keep Redis's semantics; a PX key expired on time"

# Raw bytes over bash's /dev/tcp: writes $1 (printf format) and reads until the server closes
# the connection, or at most 5 s.
raw() {
  exec 3<>"/dev/tcp/127.0.0.1/$port"
  # shellcheck disable=SC2059
  printf "$1" >&3
  timeout 5 cat <&3 >"$tmp/raw" || true
  exec 3>&-
}
# Whether the replies read are $1; $(...) drops the last newline of both alike.
got() { [ "$(cat "$tmp/raw")" = "$(printf '%s' "$1")" ]; }
# The replies, with \r shown, so that a mismatch can be read.
shown() { sed 's/\r/\\r/g' "$tmp/raw"; }

# A pipeline of array requests and inline ones in one write, ended by QUIT: every reply, in
# order, in one stream, then the server closes the connection.
raw '*3\r\n$3\r\nSET\r\n$4\r\npipe\r\n$3\r\none\r\n*2\r\n$3\r\nGET\r\n$4\r\npipe\r\nPING\r\nECHO  inline\r\nINCR n1\r\n\r\n*2\r\n$4\r\nINCR\r\n$2\r\nn1\r\n*1\r\n$4\r\nQUIT\r\n'
want=$'+OK\r\n$3\r\none\r\n+PONG\r\n$6\r\ninline\r\n:1\r\n:2\r\n+OK\r\n'
got "$want" || fail "a pipeline was answered: $(shown)"
# The same through redis-cli --pipe, which counts the replies and the errors among them (and
# exits 1 for the one error).
printf 'SET p1 a\r\nSET p2 b\r\nGET p1\r\nDEL p1 p2\r\nPING\r\nNOPE\r\n' |
  timeout 5 redis-cli -p "$port" --pipe >"$tmp/pipe" 2>&1 || true
grep -q "errors: 1, replies: 6" "$tmp/pipe" || fail "redis-cli --pipe: $(cat "$tmp/pipe")"
echo "resp-check: pipelined array and inline requests were answered in order"

# Malformed requests: the replies before the error, the error, then the end of the connection.
raw '*1\r\n$4\r\nPING\r\n*x\r\nPING\r\n'
got $'+PONG\r\n-ERR Protocol error: invalid multibulk length\r\n' ||
  fail "a bad array length was answered: $(shown)"
raw '*2\r\n$3\r\nGET\r\n+OK\r\n'
got $'-ERR Protocol error: expected \'$\', got \'+\'\r\n' ||
  fail "a missing bulk string was answered: $(shown)"
raw '*1\r\n$99999999999\r\n'
got $'-ERR Protocol error: invalid bulk length\r\n' ||
  fail "a bulk length over the limit was answered: $(shown)"
# Stricter than Redis, which skips the two bytes after a bulk string without looking at them.
raw '*1\r\n$4\r\nPINGxx'
got $'-ERR Protocol error: bulk string not followed by CRLF\r\n' ||
  fail "a bulk string without its CRLF was answered: $(shown)"
running "$pid" || fail "resp_server died on a malformed request"
expect PONG PING
expect OK SET after ok
expect ok GET after
echo "resp-check: malformed requests got a protocol error and a closed connection; the server went on"

exec 4<>"/dev/tcp/127.0.0.1/$port" # still open at the stop: the server closes it itself
kill -TERM "$pid"
status=0
for _ in $(seq 100); do
  running "$pid" || break
  sleep 0.05
done
kill -KILL "$pid" 2>/dev/null || true
wait "$pid" || status=$?
pid=
exec 4>&-
[ "$status" = 0 ] || fail "resp_server exited with $status after SIGTERM"
grep -q "resp_server: stopped" "$tmp/server.out" || fail "resp_server did not say it stopped"
echo "resp-check: resp_server stopped on SIGTERM with exit status 0"
