#!/usr/bin/env bash
# End-to-end test of the network examples (registered as the meson test
# `io_examples`):
#
#   test/io_examples.sh ECHO_SERVER ECHO_CLIENT HTTP_SERVER
#
# 1. echo_server on a free port (2 workers), then echo_client -V: 1,000
#    concurrent connections each send 1 MiB of random data in random-sized
#    writes and check every byte echoed back, in order.
# 2. http_server on a free port (2 workers): curl gets status 200 and exactly
#    "Hello, World!" for GET /, 404 for another path, two GETs over one
#    keep-alive connection, "Connection: close" honoured; then
#    `wrk -t1 -c64 -d5s` must see no socket errors and no non-2xx responses.
#
# Servers are killed on exit. Environment: IO_EXAMPLES_CONNS (default 1000)
# and IO_EXAMPLES_BYTES (default 1048576) scale step 1 for slow builds.
# Exit status: 0 pass, 1 fail, 77 skipped (curl or wrk missing: meson's skip).
set -euo pipefail

if [ $# -ne 3 ]; then
    echo "usage: $0 ECHO_SERVER ECHO_CLIENT HTTP_SERVER" >&2
    exit 2
fi
ECHO_SERVER=$1 ECHO_CLIENT=$2 HTTP_SERVER=$3
# Cross builds: meson runs this script natively and names the emulator for
# the programs it starts in MESON_EXE_WRAPPER (e.g. "qemu-aarch64 -L ...").
read -r -a WRAP <<< "${MESON_EXE_WRAPPER:-}"
CONNS=${IO_EXAMPLES_CONNS:-1000}
BYTES=${IO_EXAMPLES_BYTES:-1048576}
for tool in curl wrk; do
    if ! command -v "$tool" >/dev/null; then
        echo "SKIP: $tool is not installed (scripts/deps.sh installs it)"
        exit 77
    fi
done

# 1,000 connections need 1,000 descriptors on each side; ask for more than the
# usual soft limit of 1024 (the hard limit may be lower than 65536 in a
# container, then take what is allowed).
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt $((CONNS + 64)) ]; then
    echo "FAIL: open-file limit $(ulimit -n) is too low for $CONNS connections" >&2
    exit 1
fi

TMP=$(mktemp -d)
PIDS=()
cleanup() {
    # Only the script itself: a subshell that ran this (it failed once, with
    # "wait: No record of process" for the HTTP server, the temporary
    # directory gone and the script dead) would kill its servers.
    [ "$BASHPID" = "$$" ] || return 0
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$TMP"
}
trap cleanup EXIT

fail() {
    echo "FAIL: $*" >&2
    for f in "$TMP"/*.err; do
        [ -s "$f" ] && { echo "--- $(basename "$f"):" >&2; tail -20 "$f" >&2; }
    done
    exit 1
}

# start NAME BINARY ARGS...: starts a server, sets SERVER_PID, and PORT from
# its "listening on <port>" line.
start() {
    local name=$1; shift
    # Made here first: the background job opens its redirections only once
    # it runs, and a sed of a file not there yet failed the script (exit 2).
    : > "$TMP/$name.out"
    "${WRAP[@]}" "$@" > "$TMP/$name.out" 2> "$TMP/$name.err" &
    PIDS+=($!)
    SERVER_PID=$!
    local pid=$!
    for _ in $(seq 100); do
        PORT=$(sed -n 's/^listening on \([0-9][0-9]*\)$/\1/p' "$TMP/$name.out")
        [ -n "$PORT" ] && { echo "$name: pid $pid, port $PORT"; return 0; }
        kill -0 "$pid" 2>/dev/null || fail "$name exited before listening"
        sleep 0.1
    done
    fail "$name printed no 'listening on <port>' within 10 s"
}

# ---------------------------------------------------------------- echo ---
start echo_server "$ECHO_SERVER" 0 2 127.0.0.1
echo "echo: $CONNS connections x $BYTES bytes, random-sized writes, every byte checked"
"${WRAP[@]}" "$ECHO_CLIENT" -H 127.0.0.1 -p "$PORT" -c "$CONNS" -V "$BYTES" -d "${IO_EXAMPLES_TIMEOUT:-240}" -n kio \
    2> "$TMP/echo_client.err" || fail "echo integrity check (echo_client -V)"
tail -1 "$TMP/echo_client.err"
"${WRAP[@]}" "$ECHO_CLIENT" -H 127.0.0.1 -p "$PORT" -c 64 -s 64 -d 1 -w 0 -n kio \
    2> "$TMP/echo_client.err" >/dev/null || fail "echo request/response run"
tail -1 "$TMP/echo_client.err"

# SIGTERM: the example stops cleanly (self-pipe, kio_close of the listening
# socket, kio_runtime_destroy cancelling the connection tasks) and exits 0.
echo_pid=$SERVER_PID
kill -TERM "$echo_pid"
# Up to 10 s, polled here (no watchdog subshell to outlive or race us).
for _ in $(seq 100); do
    kill -0 "$echo_pid" 2>/dev/null || break
    sleep 0.1
done
if kill -0 "$echo_pid" 2>/dev/null; then
    kill -KILL "$echo_pid" 2>/dev/null || true
    fail "echo_server still running 10 s after SIGTERM (killed)"
fi
rc=0; wait "$echo_pid" || rc=$?
[ "$rc" = 0 ] || fail "echo_server exited with status $rc after SIGTERM"
echo "echo: SIGTERM -> clean exit"

# ---------------------------------------------------------------- http ---
start http_server "$HTTP_SERVER" 0 2 127.0.0.1
URL="http://127.0.0.1:$PORT/"

out=$(curl -s -i --max-time 10 "$URL") || fail "curl $URL"
status=$(head -1 <<<"$out" | tr -d '\r')
body=$(printf '%s' "$out" | sed '1,/^\r$/d')
[[ "$status" == "HTTP/1.1 200 OK" ]] || fail "GET /: status line '$status'"
[ "$body" = "Hello, World!" ] || fail "GET /: body '$body'"
grep -qi '^Content-Length: 13' <<<"$out" || fail "GET /: no Content-Length: 13"
grep -qi '^Content-Type: text/plain' <<<"$out" || fail "GET /: no Content-Type"
echo "http: GET / -> 200, body 'Hello, World!'"

code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 "${URL}nope") || fail "curl /nope"
[ "$code" = 404 ] || fail "GET /nope: status $code, expected 404"
echo "http: GET /nope -> 404"

# Two requests, one invocation: curl reuses the connection (keep-alive).
body=$(curl -s -v --max-time 10 "$URL" "$URL" 2> "$TMP/curl.err") || fail "curl url url"
[ "$body" = "Hello, World!Hello, World!" ] || fail "keep-alive: body '$body'"
grep -q 'Re-using existing connection' "$TMP/curl.err" || fail "keep-alive: curl opened a new connection"
echo "http: two GETs over one connection"

out=$(curl -s -i --max-time 10 -H 'Connection: close' "$URL") || fail "curl Connection: close"
grep -qi '^Connection: close' <<<"$out" || fail "Connection: close not acknowledged"
echo "http: Connection: close honoured"

wrk -t1 -c64 -d5s "$URL" > "$TMP/wrk.out" 2>&1 || fail "wrk exited with an error: $(cat "$TMP/wrk.out")"
cat "$TMP/wrk.out"
grep -q '^Requests/sec:' "$TMP/wrk.out" || fail "wrk printed no Requests/sec"
if grep -q 'Socket errors' "$TMP/wrk.out"; then fail "wrk saw socket errors"; fi
if grep -q 'Non-2xx or 3xx responses' "$TMP/wrk.out"; then fail "wrk saw non-2xx responses"; fi
reqs=$(awk '/requests in/ {print $1}' "$TMP/wrk.out")
[ "${reqs:-0}" -gt 0 ] || fail "wrk completed no request"

kill -0 "$SERVER_PID" 2>/dev/null || fail "http_server died during the test"
echo "PASS"
