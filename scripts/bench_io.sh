#!/usr/bin/env bash
# I/O benchmarks: kio's example servers against a raw epoll server, Go, libuv
# and nginx, client and server on the same machine, nothing pinned.
#
#   scripts/bench_io.sh [--quick] [--no-docs] [--build-dir DIR] [--duration SECONDS]
#                       [--rounds N]
#
# echo: examples/echo_client (epoll load generator), 64 connections, 64-byte
#       request/response, 5 s after 0.5 s of warm-up, against
#       kio examples/echo_server with 1 and 2 worker threads, bench/io/epoll_echo.c
#       (raw single-thread epoll), bench/io/go_echo (goroutine per connection)
#       and bench/io/uv_echo.c (libuv).
# http: wrk -t1 -c64 -d5s --latency (after a 1 s warm-up run) against kio
#       examples/http_server with 1 and 2 threads, nginx (worker_processes 1
#       and 2, `return 200 "Hello, World!"`, access_log off) and Go net/http
#       (bench/io/go_http). Each server's GET / is checked with curl first.
#
# Builds kio (meson, release) in DIR (default build-bench, shared with
# scripts/bench.sh) and the competitors in DIR/competitors, writes the RESULT
# lines to DIR/bench-io-results.txt and calls bench/report.py --io, which
# prints the table and updates the io-bench region of docs/performance.md and
# docs/perf_io.png.
#
#   --quick      1 s runs, no warm-up: a smoke test (implies --no-docs)
#   --no-docs    print the table only, leave docs/ alone
#   --duration   seconds per measurement (default 5)
#   --rounds     measure every system N times, interleaved (default 3, 1
#                with --quick); the report takes the median per system: one
#                5 s run of each swings by +-20% on the shared 2-vCPU VMs
#
# Needs gcc, go, libuv1-dev, wrk, nginx-light, curl (scripts/deps.sh bench,
# which it runs).
# A system whose server does not build or start is left out with a NOTE.
# Exit status: 0, or 1 if a check failed (wrong echo, wrk errors, bad body).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=build-bench
QUICK=0
DOCS=1
DURATION=5
WARMUP=0.5
ROUNDS=3
PYTHON=/usr/bin/python3
[ -x "$PYTHON" ] || PYTHON=python3

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1; DOCS=0; DURATION=1; WARMUP=0; ROUNDS=1 ;;
        --no-docs) DOCS=0 ;;
        --build-dir) BUILD="$2"; shift ;;
        --duration) DURATION="$2"; shift ;;
        --rounds) ROUNDS="$2"; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "bench_io.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done

cd "$ROOT"
# Installs what is missing on first use (KIO_BENCH_NO_DEPS=1 skips it).
[ "${KIO_BENCH_NO_DEPS:-0}" = 1 ] || scripts/deps.sh bench >&2
case "$BUILD" in /*) ;; *) BUILD="$ROOT/$BUILD" ;; esac
EXT="$BUILD/competitors"
RESULTS="$BUILD/bench-io-results.txt"
TMP=$(mktemp -d)
SERVER_PID=""

log() { printf '\n== %s\n' "$*" >&2; }
note() { echo "NOTE $*" >> "$RESULTS"; echo "bench_io.sh: $*" >&2; }

stop_server() {
    if [ -n "$SERVER_PID" ]; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
        SERVER_PID=""
    fi
}
cleanup() {
    stop_server
    [ -f "$TMP/nginx.pid" ] && kill "$(cat "$TMP/nginx.pid")" 2>/dev/null
    rm -rf "$TMP"
}
trap cleanup EXIT

START=$(date +%s)
mkdir -p "$BUILD" "$EXT"
: > "$RESULTS"
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" || true
note "load average before the run: $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo '?') on $(nproc) CPUs (client and server share them)"

# ------------------------------------------------------------------ build ---

ECHO_SERVER="" HTTP_SERVER="" ECHO_CLIENT=""
log "building kio (meson, release) in $BUILD"
kio_built=0
if [ ! -d "$BUILD/meson-private" ]; then
    meson setup "$BUILD" --buildtype=release >&2 && kio_built=1 || true
else
    kio_built=1
fi
if [ "$kio_built" = 1 ]; then
    ninja -C "$BUILD" examples/echo_server examples/http_server examples/echo_client >&2 || kio_built=0
fi
if [ "$kio_built" = 1 ]; then
    ECHO_SERVER="$BUILD/examples/echo_server"
    HTTP_SERVER="$BUILD/examples/http_server"
    ECHO_CLIENT="$BUILD/examples/echo_client"
else
    note "kio's examples did not build (see above); kio results are missing"
    gcc -O2 -std=gnu99 -pthread examples/echo_client.c -o "$EXT/echo_client" >&2 &&
        ECHO_CLIENT="$EXT/echo_client"
fi
[ -n "$ECHO_CLIENT" ] || { echo "bench_io.sh: no echo_client, cannot run" >&2; exit 2; }

log "building the competitors in $EXT"
EPOLL_ECHO="" UV_ECHO="" GO_ECHO="" GO_HTTP=""
gcc -O2 -std=gnu99 bench/io/epoll_echo.c -o "$EXT/epoll_echo" >&2 && EPOLL_ECHO="$EXT/epoll_echo" ||
    note "bench/io/epoll_echo.c did not build"
gcc -O2 -std=gnu99 bench/io/uv_echo.c -o "$EXT/uv_echo" -luv >&2 && UV_ECHO="$EXT/uv_echo" ||
    note "bench/io/uv_echo.c did not build (libuv1-dev missing?)"
if [ -z "${GOCACHE:-}" ] && [ -z "${HOME:-}" ]; then export GOCACHE="$BUILD/go-cache"; fi
(cd bench/io/go_echo && GOPROXY=off GOFLAGS= go build -o "$EXT/go_echo" .) >&2 && GO_ECHO="$EXT/go_echo" ||
    note "bench/io/go_echo did not build"
(cd bench/io/go_http && GOPROXY=off GOFLAGS= go build -o "$EXT/go_http" .) >&2 && GO_HTTP="$EXT/go_http" ||
    note "bench/io/go_http did not build"
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
[ -x "$NGINX" ] || { NGINX=""; note "nginx is not installed (apt-get install nginx-light)"; }
command -v wrk >/dev/null || note "wrk is not installed: no http results"

# -------------------------------------------------------------------- run ---

# start_server LABEL CMD...: starts a server that prints "listening on <port>"
# and sets PORT; returns 1 (with a NOTE) if it does not come up in 10 s.
start_server() {
    local label=$1; shift
    # Emptied here first: the background job opens its redirections only
    # once it runs, and until then the file is missing (sed fails) or still
    # holds the previous server's port.
    : > "$TMP/server.out"
    "$@" > "$TMP/server.out" 2> "$TMP/server.err" &
    SERVER_PID=$!
    for _ in $(seq 100); do
        PORT=$(sed -n 's/^listening on \([0-9][0-9]*\)$/\1/p' "$TMP/server.out")
        [ -n "$PORT" ] && return 0
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.1
    done
    note "$label: server did not start: $(tail -3 "$TMP/server.err" | tr '\n' ' ')"
    stop_server
    return 1
}

# cpu_ticks PID: user+system CPU time of PID and its direct children (nginx
# workers), in clock ticks.
CLK_TCK=$(getconf CLK_TCK)
cpu_ticks() {
    local total=0 p f
    for p in "$1" $(pgrep -P "$1" 2>/dev/null || true); do
        f=$(cut -d')' -f2 "/proc/$p/stat" 2>/dev/null) || continue
        set -- $f
        total=$((total + ${12} + ${13}))  # utime, stime (fields 14, 15 of stat)
    done
    echo "$total"
}

# add_cpu LINE TICKS REQUESTS: LINE with cpu_us=<server CPU µs per request>
# inserted before check=.
add_cpu() {
    local per
    per=$(awk -v t="$2" -v n="$3" -v hz="$CLK_TCK" 'BEGIN { if (n > 0) printf "%.2f", t * 1e6 / hz / n; else print "nan" }')
    printf '%s\n' "$1" | sed "s/ check=/ cpu_us=$per check=/"
}

free_port() {
    "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# The server must still be alive after a run, or its numbers mean nothing.
check_alive() {
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
        note "$1: the server died during the run: $(tail -3 "$TMP/server.err" | tr '\n' ' ')"
        return 1
    fi
}

# echo_run SYSTEM CMD...: one echo measurement.
echo_run() {
    local sys=$1; shift
    printf '%-12s ' "$sys" >&2
    start_server "echo $sys" "$@" || return 0
    local out rc=0 c0 c1 rps
    c0=$(cpu_ticks "$SERVER_PID")
    out=$("$ECHO_CLIENT" -H 127.0.0.1 -p "$PORT" -c 64 -s 64 -d "$DURATION" -w "$WARMUP" -n "$sys" \
        2> "$TMP/client.err") || rc=$?
    c1=$(cpu_ticks "$SERVER_PID")
    tail -1 "$TMP/client.err" | sed 's/^echo_client: //' >&2
    # Requests served while the CPU was counted, warm-up included (same rate).
    rps=$(printf '%s\n' "$out" | sed -n 's/^RESULT .* value=\([0-9.]*\) .*/\1/p')
    out=$(add_cpu "$out" $((c1 - c0)) "$(awk -v r="${rps:-0}" -v d="$DURATION" -v w="$WARMUP" 'BEGIN { print r * (d + w) }')")
    if ! check_alive "echo $sys"; then
        out=$(printf '%s\n' "$out" | sed 's/check=ok/check=FAIL/')
    fi
    printf '%s\n' "$out" | grep '^RESULT ' >> "$RESULTS" || note "echo $sys: no RESULT line (client status $rc)"
    stop_server
}

# to_us VALUE: wrk's "1.23ms" / "456.00us" / "1.01s" in microseconds.
to_us() {
    awk -v v="$1" 'BEGIN {
        n = v + 0
        if (v ~ /us$/) m = 1; else if (v ~ /ms$/) m = 1000; else if (v ~ /s$/) m = 1000000; else m = 1
        printf "%.1f", n * m }'
}

# http_measure SYSTEM URL: curl check, warm-up, wrk run, RESULT line.
http_measure() {
    local sys=$1 url=$2 check=ok body
    body=$(curl -s --max-time 5 "$url" || true)
    if [ "$body" != "Hello, World!" ]; then
        note "http $sys: GET / returned '$body', not 'Hello, World!'"
        check=FAIL
    fi
    [ "$QUICK" = 1 ] || wrk -t1 -c64 -d1s "$url" > /dev/null 2>&1 || true
    local c0 c1
    c0=$(cpu_ticks "$SERVER_PID")
    if ! wrk -t1 -c64 -d"${DURATION}s" --latency "$url" > "$TMP/wrk.out" 2>&1; then
        note "http $sys: wrk failed: $(tail -2 "$TMP/wrk.out" | tr '\n' ' ')"
        echo "(wrk failed)" >&2
        return 0
    fi
    c1=$(cpu_ticks "$SERVER_PID")
    local rps p99 errs non2xx total
    rps=$(awk '/^Requests\/sec:/ {print $2}' "$TMP/wrk.out")
    total=$(awk '/ requests in / {print $1}' "$TMP/wrk.out")
    p99=$(awk '$1 == "99%" {print $2}' "$TMP/wrk.out")
    errs=$(grep 'Socket errors:' "$TMP/wrk.out" || true)
    non2xx=$(grep 'Non-2xx or 3xx responses:' "$TMP/wrk.out" || true)
    if [ -n "$errs" ]; then note "http $sys: wrk $(echo "$errs" | sed 's/^ *//')"; check=FAIL; fi
    if [ -n "$non2xx" ]; then note "http $sys: wrk $(echo "$non2xx" | sed 's/^ *//')"; check=FAIL; fi
    if [ -z "$rps" ] || [ -z "$p99" ]; then
        note "http $sys: could not parse wrk's output"
        return 0
    fi
    check_alive "http $sys" || check=FAIL
    printf '%.0f req/s, p99 %s\n' "$rps" "$p99" >&2
    add_cpu "$(printf 'RESULT workload=http system=%s value=%.0f unit=req/s p99_us=%s check=%s' \
        "$sys" "$rps" "$(to_us "$p99")" "$check")" $((c1 - c0)) "${total:-0}" >> "$RESULTS"
}

http_run() {
    local sys=$1; shift
    printf '%-12s ' "$sys" >&2
    start_server "http $sys" "$@" || return 0
    http_measure "$sys" "http://127.0.0.1:$PORT/"
    stop_server
}

nginx_run() {
    local workers=$1 sys="nginx_w$1" port
    printf '%-12s ' "$sys" >&2
    port=$(free_port)
    mkdir -p "$TMP/nginx"
    cat > "$TMP/nginx/nginx.conf" <<EOF
worker_processes $workers;
daemon off;
pid $TMP/nginx.pid;
error_log $TMP/nginx/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 100000000;
    client_body_temp_path $TMP/nginx/body;
    proxy_temp_path $TMP/nginx/proxy;
    fastcgi_temp_path $TMP/nginx/fastcgi;
    uwsgi_temp_path $TMP/nginx/uwsgi;
    scgi_temp_path $TMP/nginx/scgi;
    server {
        listen 127.0.0.1:$port;
        location = / {
            default_type text/plain;
            return 200 "Hello, World!";
        }
    }
}
EOF
    "$NGINX" -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf" -e "$TMP/nginx/error.log" \
        > "$TMP/server.out" 2> "$TMP/server.err" &
    SERVER_PID=$!
    local up=0
    for _ in $(seq 100); do
        curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$port/" && { up=1; break; }
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.1
    done
    if [ "$up" = 1 ]; then
        http_measure "$sys" "http://127.0.0.1:$port/"
    else
        note "http $sys: nginx did not start: $(tail -3 "$TMP/nginx/error.log" "$TMP/server.err" 2>/dev/null | tr '\n' ' ')"
    fi
    stop_server  # SIGTERM to the master: fast shutdown of the workers
    rm -f "$TMP/nginx.pid"
}

for ((round = 1; round <= ROUNDS; round++)); do
    [ "$ROUNDS" -gt 1 ] && log "round $round of $ROUNDS"
    log "echo: 64 connections x 64-byte request/response, ${DURATION} s (+${WARMUP} s warm-up)"
    [ -n "$ECHO_SERVER" ] && echo_run kio_1t "$ECHO_SERVER" 0 1 127.0.0.1
    [ -n "$ECHO_SERVER" ] && echo_run kio_2t "$ECHO_SERVER" 0 2 127.0.0.1
    [ -n "$EPOLL_ECHO" ] && echo_run epoll "$EPOLL_ECHO" 0 127.0.0.1
    [ -n "$GO_ECHO" ] && echo_run go "$GO_ECHO" -port 0
    [ -n "$UV_ECHO" ] && echo_run libuv "$UV_ECHO" 0 127.0.0.1

    if command -v wrk >/dev/null; then
        log "http: wrk -t1 -c64 -d${DURATION}s --latency, GET / -> \"Hello, World!\""
        [ -n "$HTTP_SERVER" ] && http_run kio_1t "$HTTP_SERVER" 0 1 127.0.0.1
        [ -n "$HTTP_SERVER" ] && http_run kio_2t "$HTTP_SERVER" 0 2 127.0.0.1
        if [ -n "$NGINX" ]; then nginx_run 1; nginx_run 2; fi
        [ -n "$GO_HTTP" ] && http_run go "$GO_HTTP" -port 0
    fi
done
[ "$ROUNDS" -gt 1 ] && note "$ROUNDS interleaved rounds; values are per-system medians"

[ "$QUICK" = 1 ] && note "quick mode (--quick): ${DURATION} s runs without warm-up; not comparable"

# ----------------------------------------------------------------- report ---

log "report ($(( $(date +%s) - START )) s of building and running)"
if [ "$DOCS" = 1 ]; then
    "$PYTHON" bench/report.py "$RESULTS" --io --md docs/performance.md --png docs/perf_io.png
else
    "$PYTHON" bench/report.py "$RESULTS" --io
fi
echo "bench_io.sh: raw results in $RESULTS" >&2
if grep -q 'check=FAIL' "$RESULTS"; then
    echo "bench_io.sh: some checks FAILED" >&2
    exit 1
fi
