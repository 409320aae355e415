#!/usr/bin/env bash
# The main job: installs what kio needs (Debian 12), builds it, and runs the
# examples so a newcomer sees the runtime at work in a minute:
#   1. examples/demo.c: tasks, await, a mutex, sleep and cancellation;
#   2. examples/echo_server.c under load from examples/echo_client.c
#      (one fiber per connection), with an integrity check;
#   3. examples/http_server.c answering curl.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
scripts/deps.sh test
[ -d build ] || meson setup build --buildtype=release >/dev/null
ninja -C build >/dev/null

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

# Starts a server on port 0 and prints the port it chose.
start_server() {  # binary, log file
    : >"$2"  # there before the sed below (the job opens it only once it runs)
    "$1" 0 0 127.0.0.1 >"$2" 2>&1 &
    pids+=($!)
    for _ in $(seq 100); do
        port=$(sed -n 's/^listening on \([0-9]*\).*/\1/p' "$2")
        [ -n "$port" ] && { echo "$port"; return; }
        sleep 0.05
    done
    echo "demo.sh: $1 did not start" >&2
    exit 1
}

tmp=$(mktemp -d)
echo "== 1. examples/demo.c: tasks, await, mutex, sleep, cancellation"
build/examples/demo

echo
echo "== 2. examples/echo_server.c: one fiber per connection"
port=$(start_server build/examples/echo_server "$tmp/echo.log")
echo "echo_server listening on 127.0.0.1:$port"
echo "-- 200 connections each send 256 KiB in random-sized writes and verify every byte echoed back:"
build/examples/echo_client -H 127.0.0.1 -p "$port" -c 200 -V 262144
echo "-- 64 connections doing 64-byte request/response for 3 s:"
build/examples/echo_client -H 127.0.0.1 -p "$port" -c 64 -d 3 -s 64 -n kio_echo

echo
echo "== 3. examples/http_server.c: HTTP/1.1 keep-alive"
port=$(start_server build/examples/http_server "$tmp/http.log")
echo "\$ curl -s http://127.0.0.1:$port/"
curl -s "http://127.0.0.1:$port/"
echo
rm -rf "$tmp"
