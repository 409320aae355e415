#!/usr/bin/env bash
# Core runtime benchmarks: kio against Go and Boost (Boost.Context, Boost.Fiber).
#
#   scripts/bench.sh [--quick] [--systems "kio go boost"] [--workloads "switch yield ..."]
#                    [--no-docs] [--no-io] [--build-dir DIR]
#
# Builds kio (meson, release; bench/meson.build adds kio_core_bench and
# kio_switch_bench), the Go program (bench/go/core, no network) and the Boost
# program (bench/boost/boost_bench.cpp), runs every workload for every system,
# collects the RESULT lines in BUILD/bench-results.txt and calls
# bench/report.py, which prints a markdown table and updates the region between
# the core-bench markers of docs/performance.md and docs/perf_core.png.
#
#   --quick        tiny iteration counts, 1 timed run: a smoke test (implies --no-docs)
#   --no-docs      print the table only, leave docs/ alone
#   --systems      subset of: kio go boost            (default: all three)
#   --workloads    subset of: switch yield spawn_await spawn_await_batch skynet
#                  mutex pingpong idle sleep          (default: all)
#   --build-dir    meson build directory              (default: build-bench)
#   --no-io        skip the I/O benchmarks that run at the end (scripts/bench_io.sh:
#                  kio's echo and HTTP servers against raw epoll, Go, libuv, nginx;
#                  ~1.5 min; its own table region and docs/perf_io.png)
#
# Environment: BENCH_TIMEOUT (seconds per program run, default 180),
# BENCH_BOOST_SKYNET=0|1 (Boost.Fiber skynet needs about 5 GB of RAM; by default
# it runs only when MemAvailable is at least 8 GiB).
#
# If kio does not build yet (no top-level meson.build, or a build error), the
# competitors still run; kio_switch_bench (which needs only lib/context.h and
# the assembly) is then built directly with g++.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=build-bench
QUICK=0
DOCS=1
IO=1
SYSTEMS="kio go boost"
WORKLOADS="switch yield spawn_await spawn_await_batch skynet mutex pingpong idle sleep"
TIMEOUT=${BENCH_TIMEOUT:-180}
PYTHON=/usr/bin/python3
[ -x "$PYTHON" ] || PYTHON=python3

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1; DOCS=0 ;;
        --no-docs) DOCS=0 ;;
        --no-io) IO=0 ;;
        --systems) SYSTEMS="$2"; shift ;;
        --workloads) WORKLOADS="$2"; shift ;;
        --build-dir) BUILD="$2"; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "bench.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done

cd "$ROOT"
# The competitors and tools (Go, Boost, libuv, wrk, nginx, matplotlib) come
# from Debian's packages, installed on first use. KIO_BENCH_NO_DEPS=1 skips
# this (a machine without apt access runs whatever is installed).
[ "${KIO_BENCH_NO_DEPS:-0}" = 1 ] || scripts/deps.sh bench >&2
case "$BUILD" in /*) ;; *) BUILD="$ROOT/$BUILD" ;; esac
EXT="$BUILD/competitors"
RESULTS="$BUILD/bench-results.txt"

has() { case " $1 " in *" $2 "*) return 0 ;; *) return 1 ;; esac; }
log() { printf '\n== %s\n' "$*" >&2; }
note() { echo "NOTE $*" >> "$RESULTS"; echo "bench.sh: $*" >&2; }

START=$(date +%s)

# ------------------------------------------------------------------ build ---

KIO_CORE="" KIO_SWITCH="" GO_BIN="" BOOST_BIN=""
mkdir -p "$BUILD"
: > "$RESULTS"

if has "$SYSTEMS" kio; then
    log "building kio (meson, release) in $BUILD"
    kio_built=0
    if [ -f "$ROOT/meson.build" ]; then
        if [ ! -d "$BUILD/meson-private" ]; then
            meson setup "$BUILD" --buildtype=release >&2 && kio_built=1 || true
        else
            kio_built=1
        fi
        if [ "$kio_built" = 1 ]; then
            ninja -C "$BUILD" >&2 || kio_built=0
        fi
    fi
    if [ "$kio_built" = 1 ]; then
        [ -x "$BUILD/bench/kio_core_bench" ] && KIO_CORE="$BUILD/bench/kio_core_bench"
        [ -x "$BUILD/bench/kio_switch_bench" ] && KIO_SWITCH="$BUILD/bench/kio_switch_bench"
        [ -n "$KIO_CORE" ] || note "kio built, but $BUILD/bench/kio_core_bench is missing (is subdir('bench') in meson.build?)"
    else
        note "kio did not build (see the meson/ninja output above); kio results are missing"
    fi
    if [ -z "$KIO_SWITCH" ]; then
        case "$(uname -m)" in
            x86_64|amd64) asm_src=asm/switch_x86_64_sysv.S ;;
            aarch64|arm64) asm_src=asm/switch_aarch64_aapcs.S ;;
            *) asm_src="" ;;
        esac
        mkdir -p "$EXT"
        if [ -n "$asm_src" ] && g++ -O2 -std=c++17 -I lib bench/kio/switch_bench.cpp "$asm_src" \
                -o "$EXT/kio_switch_bench" >&2; then
            KIO_SWITCH="$EXT/kio_switch_bench"
        else
            note "kio_switch_bench could not be built"
        fi
    fi
fi

if has "$SYSTEMS" go; then
    log "building the Go competitor"
    mkdir -p "$EXT"
    # No network: the module has no dependencies. Keep the build cache usable
    # even without a HOME.
    if [ -z "${GOCACHE:-}" ] && [ -z "${HOME:-}" ]; then export GOCACHE="$BUILD/go-cache"; fi
    if (cd bench/go/core && GOPROXY=off GOFLAGS= go build -o "$EXT/go_core_bench" .) >&2; then
        GO_BIN="$EXT/go_core_bench"
    else
        note "the Go competitor did not build"
    fi
fi

if has "$SYSTEMS" boost; then
    log "building the Boost competitor"
    mkdir -p "$EXT"
    if g++ -O2 -std=c++17 bench/boost/boost_bench.cpp -o "$EXT/boost_bench" \
            -lboost_fiber -lboost_context -pthread >&2; then
        BOOST_BIN="$EXT/boost_bench"
    else
        note "the Boost competitor did not build"
    fi
fi

# -------------------------------------------------------------------- run ---

# run <label> <command...>: runs one benchmark program, appends its RESULT
# lines to $RESULTS and notes a crash, a timeout or a missing result.
run() {
    local label="$1"; shift
    local out rc=0
    printf '%-28s ' "$label" >&2
    out=$(timeout "$TIMEOUT" "$@" 2> >(sed "s/^/    [$label] /" >&2)) || rc=$?
    local results
    results=$(printf '%s\n' "$out" | grep '^RESULT ' || true)
    if [ -n "$results" ]; then
        printf '%s\n' "$results" >> "$RESULTS"
        printf '%s\n' "$results" | sed 's/^RESULT workload=[^ ]* system=[^ ]* //' | paste -sd' ' >&2
    else
        echo "(no result)" >&2
    fi
    if [ "$rc" = 124 ]; then
        note "$label: timed out after ${TIMEOUT}s"
    elif [ "$rc" != 0 ] && [ "$rc" != 1 ]; then
        note "$label: exited with status $rc"
    elif [ -z "$results" ]; then
        note "$label: printed no RESULT line"
    fi
}

# Iteration counts (N as each program defines it) and timed runs.
if [ "$QUICK" = 1 ]; then
    REPS=1
    declare -A N=([switch]=1000000 [yield]=100000 [spawn_await]=50000 [spawn_await_batch]=50000
                  [skynet]=10000 [mutex]=50000 [pingpong]=50000 [idle]=10000 [sleep]=10000)
    IDLE_PROCS=1
else
    REPS=3
    declare -A N=([switch]=10000000 [yield]=2000000 [spawn_await]=1000000 [spawn_await_batch]=1000000
                  [skynet]=1000000 [mutex]=1000000 [pingpong]=1000000 [idle]=100000 [sleep]=100000)
    IDLE_PROCS=3
fi

boost_skynet=${BENCH_BOOST_SKYNET:-}
if [ -z "$boost_skynet" ]; then
    avail_kb=$(awk '/^MemAvailable:/ {print $2}' /proc/meminfo 2>/dev/null || echo 0)
    if [ "$QUICK" = 1 ] || [ "${avail_kb:-0}" -ge $((8 * 1024 * 1024)) ]; then boost_skynet=1; else boost_skynet=0; fi
fi

for w in $WORKLOADS; do
    n=${N[$w]:-}
    if [ -z "$n" ]; then echo "bench.sh: unknown workload $w" >&2; exit 2; fi
    log "$w"
    procs=1
    [ "$w" = idle ] && procs=$IDLE_PROCS
    for ((p = 0; p < procs; p++)); do
        if [ "$w" = switch ]; then
            [ -n "$KIO_SWITCH" ] && run "kio switch" "$KIO_SWITCH" -n "$n" -r "$REPS"
            [ -n "$BOOST_BIN" ] && run "boost_context switch" "$BOOST_BIN" switch_context -n "$n" -r "$REPS"
            [ -n "$BOOST_BIN" ] && run "boost_fcontext switch" "$BOOST_BIN" switch_fcontext -n "$n" -r "$REPS"
            continue
        fi
        [ -n "$KIO_CORE" ] && run "kio $w" "$KIO_CORE" "$w" -n "$n" -r "$REPS"
        [ -n "$GO_BIN" ] && run "go $w" "$GO_BIN" -w "$w" -n "$n" -r "$REPS"
        if [ -n "$BOOST_BIN" ]; then
            if [ "$w" = skynet ] && [ "$boost_skynet" != 1 ]; then
                [ "$p" = 0 ] && note "Boost.Fiber skynet skipped (needs ~5 GB RAM; BENCH_BOOST_SKYNET=1 forces it)"
            elif [ "$w" = mutex ]; then
                # 2 threads (work_stealing), like kio's 2 workers and GOMAXPROCS=2.
                run "boost_fiber $w" "$BOOST_BIN" "$w" -n "$n" -r "$REPS" -t 2
            else
                run "boost_fiber $w" "$BOOST_BIN" "$w" -n "$n" -r "$REPS"
            fi
        fi
    done
done

[ "$QUICK" = 1 ] && note "quick mode (--quick): reduced iteration counts, 1 timed run; not comparable"

# ----------------------------------------------------------------- report ---

log "report ($(( $(date +%s) - START )) s of building and running)"
if [ "$DOCS" = 1 ]; then
    "$PYTHON" bench/report.py "$RESULTS" --md docs/performance.md --png docs/perf_core.png
else
    "$PYTHON" bench/report.py "$RESULTS"
fi
echo "bench.sh: raw results in $RESULTS" >&2
failed=0
if grep -q 'check=FAIL' "$RESULTS"; then
    echo "bench.sh: some checks FAILED" >&2
    failed=1
fi

# ------------------------------------------------------------------- I/O ---

if [ "$IO" = 1 ]; then
    log "I/O benchmarks (scripts/bench_io.sh)"
    io_args=(--build-dir "$BUILD")
    [ "$QUICK" = 1 ] && io_args+=(--quick)
    [ "$DOCS" = 0 ] && io_args+=(--no-docs)
    "$ROOT/scripts/bench_io.sh" "${io_args[@]}" || failed=1
fi
exit "$failed"
