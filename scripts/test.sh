#!/usr/bin/env bash
# Runs every test of kio, as CI does: the whole suite in an optimized build,
# again under AddressSanitizer + UndefinedBehaviorSanitizer and under
# ThreadSanitizer (with the fiber-switch annotations compiled in), and the core
# tests under valgrind. Installs what it needs first (Debian 12).
#
#   scripts/test.sh [stage...]     stages: release asan tsan valgrind (default: all)
#
# Build directories: build-test, build-asan, build-tsan, build-valgrind.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
scripts/deps.sh test

stages=("$@")
[ ${#stages[@]} -eq 0 ] && stages=(release asan tsan valgrind)
JOBS=$(nproc)
start=$(date +%s)

banner() { printf '\n==== %s (%ss elapsed) ====\n' "$*" $(( $(date +%s) - start )); }

setup() {  # dir, meson options...
    local dir=$1; shift
    if [ -d "$dir" ]; then
        meson setup --reconfigure "$dir" "$@" >/dev/null
    else
        meson setup "$dir" "$@" >/dev/null
    fi
    ninja -C "$dir" >/dev/null
}

run_suite() {  # dir, extra meson test args...
    local dir=$1; shift
    meson test -C "$dir" --print-errorlogs --num-processes "$JOBS" "$@"
}

for stage in "${stages[@]}"; do
    case "$stage" in
    release)
        banner "release build: every test"
        setup build-test --buildtype=debugoptimized
        run_suite build-test
        ;;
    asan)
        banner "AddressSanitizer + UndefinedBehaviorSanitizer: every test"
        setup build-asan --buildtype=debug -Db_sanitize=address,undefined -Db_lundef=false \
            -Dbenchmarks=false
        ASAN_OPTIONS=detect_stack_use_after_return=1:detect_leaks=1:abort_on_error=1 \
        UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
        KIO_STRESS_SCALE=10 run_suite build-asan --timeout-multiplier 3
        ;;
    tsan)
        banner "ThreadSanitizer: every test"
        setup build-tsan --buildtype=debugoptimized -Db_sanitize=thread -Db_lundef=false \
            -Dbenchmarks=false
        TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 \
        KIO_STRESS_SCALE=1 run_suite build-tsan --timeout-multiplier 4
        ;;
    valgrind)
        banner "valgrind: core tests, no leaks"
        setup build-valgrind --buildtype=debug -Dvalgrind=true -Dbenchmarks=false
        KIO_STRESS_SCALE=2 run_suite build-valgrind --suite valgrind --timeout-multiplier 10
        ;;
    *) echo "test.sh: unknown stage $stage" >&2; exit 2 ;;
    esac
done
banner "all stages passed"
