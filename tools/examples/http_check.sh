#!/usr/bin/env bash
# `make examples-check` (examples-check-http): runs tools/examples/http_server for real against
# curl and raw connections: GET and HEAD, keep-alive (curl reuses one connection), a POST body
# echoed byte for byte, 404 and 405, pipelined requests answered in order, 400 for a malformed
# request line and for an oversized header, a slowloris half request that neither holds up other
# clients nor outlives its deadline, and a SIGTERM that lets the request in flight finish and
# exits 0. Every wait is bounded, so a hang fails in seconds.
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
  echo "examples-check: http_server: $*" >&2
  [ -f "$tmp/server.out" ] && sed 's/^/  server: /' "$tmp/server.out" >&2
  exit 1
}

# Whether a process runs: it exists and is not a zombie waiting for this shell to reap it.
running() {
  local state
  state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
  [ -n "$state" ] && [ "$state" != Z ]
}

# The request timeout the server gets: the slowloris connection must be gone soon after it.
timeout_ms=2000
"$bin/http_server" 0 "$timeout_ms" >"$tmp/server.out" 2>&1 &
server=$!
pids+=("$server")
for _ in $(seq 100); do
  grep -q "listening on" "$tmp/server.out" 2>/dev/null && break
  sleep 0.05
done
port=$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$tmp/server.out")
[ -n "$port" ] || fail "did not start"
url="http://127.0.0.1:$port"
curl=(curl --silent --show-error --max-time 5)

# The status code and the body of one request: "CODE BODY".
status_and_body() {
  "${curl[@]}" --output "$tmp/body" --write-out '%{http_code}' "$@" >"$tmp/code" ||
    fail "curl $* failed"
  echo "$(cat "$tmp/code") $(cat "$tmp/body")"
}

[ "$(status_and_body "$url/")" = "200 Hello, World!" ] || fail "GET /: $(status_and_body "$url/")"
[ "$(status_and_body "$url/hello?x=1")" = "200 Hello, World!" ] || fail "GET /hello?x=1"
head=$("${curl[@]}" --head "$url/") || fail "HEAD / failed"
grep -q '^HTTP/1.1 200 OK' <<<"$head" || fail "HEAD /: $head"
grep -q '^Content-Length: 14' <<<"$head" || fail "HEAD / lacks the body's length: $head"
[ "$(status_and_body "$url/nope")" = "404 not found" ] || fail "GET /nope is not a 404"
[ "$(status_and_body -X DELETE "$url/")" = "405 method not allowed" ] || fail "DELETE / not 405"
[ "$(status_and_body "$url/echo")" = "405 method not allowed" ] || fail "GET /echo is not a 405"
echo "examples-check: http_server: GET, HEAD, 404 and 405"

# Keep-alive: curl runs three transfers over the connection the first one opened.
connects=$("${curl[@]}" --output /dev/null --output /dev/null --output /dev/null \
  --write-out '%{http_code}:%{num_connects} ' "$url/" "$url/hello" "$url/nope") ||
  fail "keep-alive transfers failed"
[ "$connects" = "200:1 200:0 404:0 " ] || fail "keep-alive: curl reports '$connects'"

# POST bodies: a short one and 60 KiB of random bytes (the limit is 64 KiB) come back unchanged;
# one past the limit is a 413.
[ "$(status_and_body --data-binary 'hello body' "$url/echo")" = "200 hello body" ] ||
  fail "POST /echo of a short body"
head -c 61440 /dev/urandom >"$tmp/big"
"${curl[@]}" --data-binary "@$tmp/big" --output "$tmp/big.back" "$url/echo" ||
  fail "POST /echo of 60 KiB failed"
cmp -s "$tmp/big" "$tmp/big.back" || fail "POST /echo of 60 KiB came back different"
head -c 70000 /dev/zero >"$tmp/huge"
code=$("${curl[@]}" --data-binary "@$tmp/huge" --output /dev/null --write-out '%{http_code}' \
  "$url/echo") || fail "POST /echo of 70000 bytes failed"
[ "$code" = 413 ] || fail "POST /echo of 70000 bytes answered $code, not 413"
echo "examples-check: http_server: keep-alive over one connection, POST bodies echoed, 413"

# Malformed requests: a space in the method breaks the request line; a 9000-byte field passes
# the 8 KiB header limit. Each is a 400, and the server goes on serving.
code=$("${curl[@]}" -X 'G T' --output /dev/null --write-out '%{http_code}' "$url/") ||
  fail "the malformed request line got no answer"
[ "$code" = 400 ] || fail "a malformed request line answered $code, not 400"
code=$("${curl[@]}" -H "X-Big: $(head -c 9000 /dev/zero | tr '\0' a)" --output /dev/null \
  --write-out '%{http_code}' "$url/") || fail "the oversized header got no answer"
[ "$code" = 400 ] || fail "an oversized header answered $code, not 400"
exec 3<>"/dev/tcp/127.0.0.1/$port"
printf 'GET / HTTP/1.1\nHost: x\n\n' >&3 # bare LF line ends
reply=$(timeout 5 cat <&3) || fail "no answer to a request with bare LF line ends"
exec 3<&-
grep -q '^HTTP/1.1 400 Bad Request' <<<"$reply" || fail "bare LF line ends: $reply"
echo "examples-check: http_server: 400 for a malformed request line, an oversized header, bare LF"

# Pipelining: three requests in one write come back in order; the last asks to close.
exec 3<>"/dev/tcp/127.0.0.1/$port"
printf '%s' "GET / HTTP/1.1"$'\r\n'"Host: x"$'\r\n\r\n'"GET /nope HTTP/1.1"$'\r\n'"Host: x"$'\r\n\r\n' \
  "POST /echo HTTP/1.1"$'\r\n'"Host: x"$'\r\n'"Content-Length: 9"$'\r\n' \
  "Connection: close"$'\r\n\r\n'"pipelined" >&3
reply=$(timeout 5 cat <&3 | tr -d '\r') || fail "no answer to the pipelined requests"
exec 3<&-
statuses=$(grep '^HTTP/1.1' <<<"$reply" | tr '\n' ,)
[ "$statuses" = "HTTP/1.1 200 OK,HTTP/1.1 404 Not Found,HTTP/1.1 200 OK," ] ||
  fail "pipelined requests answered: $statuses"
[ "$(tail -n 1 <<<"$reply")" = pipelined ] || fail "the pipelined POST's body did not come back"
echo "examples-check: http_server: three pipelined requests answered in order"

# Slowloris: a connection sends half a header and stalls. Others are served meanwhile, and the
# server closes the stalled one once its request timeout has passed.
exec 3<>"/dev/tcp/127.0.0.1/$port"
printf 'GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ' >&3
started=$(date +%s%N)
for i in 1 2 3; do
  [ "$(status_and_body "$url/")" = "200 Hello, World!" ] || fail "not served beside a slowloris"
done
read_status=0
IFS= read -r -t 10 line <&3 || read_status=$?
elapsed_ms=$((($(date +%s%N) - started) / 1000000))
exec 3<&-
# read gives 1 at end of file, more than 128 when its own timeout passed.
[ "$read_status" = 1 ] || fail "the stalled connection was not closed (read: $read_status)"
# The server's clock is its last sweep's (every 250 ms), so a deadline may come that much early.
[ "$elapsed_ms" -ge $((timeout_ms - 500)) ] || fail "the stalled connection closed early: $elapsed_ms ms"
[ "$elapsed_ms" -le $((timeout_ms + 3000)) ] || fail "the stalled connection lived $elapsed_ms ms"
echo "examples-check: http_server: a stalled half request was closed after $elapsed_ms ms while others were served"

# The graceful stop: a POST whose body is half sent when SIGTERM arrives is still answered (well
# within its request timeout); a new connection is refused meanwhile; the server then exits 0.
exec 3<>"/dev/tcp/127.0.0.1/$port"
printf 'POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 9\r\n\r\nin ' >&3
exec 4<>"/dev/tcp/127.0.0.1/$port" # an idle keep-alive connection: closed by the stop
sleep 0.2
kill -TERM "$server"
sleep 0.3
! "${curl[@]}" --output /dev/null "$url/" 2>/dev/null || fail "still accepting after SIGTERM"
running "$server" || fail "exited before answering the request in flight"
printf 'flight' >&3
reply=$(timeout 5 cat <&3 | tr -d '\r') || fail "the request in flight got no answer"
exec 3<&-
grep -q '^HTTP/1.1 200 OK' <<<"$reply" || fail "the request in flight: $reply"
grep -q '^Connection: close' <<<"$reply" || fail "the answer after SIGTERM does not close: $reply"
[ "$(tail -n 1 <<<"$reply")" = "in flight" ] || fail "the request in flight lost its body: $reply"
timeout 5 cat <&4 >/dev/null || fail "the idle connection was not closed by the stop"
exec 4<&-
for _ in $(seq 100); do
  running "$server" || break
  sleep 0.05
done
kill -KILL "$server" 2>/dev/null || true
status=0
wait "$server" || status=$?
[ "$status" = 0 ] || fail "exited with $status after SIGTERM"
grep -q "http_server: stopped" "$tmp/server.out" || fail "did not say it stopped"
echo "examples-check: http_server: SIGTERM let the request in flight finish, then exited 0"
