#!/usr/bin/env bash
# Runs every test of kio, as CI does: the whole suite in an optimized build,
# again under AddressSanitizer + UndefinedBehaviorSanitizer and under
# ThreadSanitizer (with the fiber-switch annotations compiled in), and the core
# tests under valgrind; also the core suites with KIO_DEBUG_MIGRATE=1 (every
# fiber moves to another worker at each resume). Installs what it needs first
# (Debian 12).
#
#   scripts/test.sh [stage...]     stages: release migrate asan tsan valgrind
#                                  install abi aarch64 macos python rust (default: all)
#
# Packaging and portability stages (each script installs what it needs):
#   install  scripts/install_test.sh: meson install into a prefix, pkg-config,
#            SONAME and exported symbols of the installed library
#   abi      scripts/abi_check.sh: ABI against abi/libkio.abi (libabigail)
#   aarch64  scripts/cross_aarch64.sh: cross build, whole suite under qemu
#   macos    scripts/cross_macos.sh: libkio.dylib for x86_64 and arm64 (zig)
#   python   bindings/python/tests (pytest) against build-test/libkio.so
#   rust     bindings/rust: cargo test --offline of kio-sys and kio against
#            build-test/libkio.so (needs cargo; target dir build-test/rust-target)
#
# Build directories: build-test, build-asan, build-tsan, build-valgrind; the
# packaging stages use build-install, build-abi, build-aarch64(-deps) and
# build-macos-{ref,x86_64,aarch64}.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
scripts/deps.sh test

stages=("$@")
[ ${#stages[@]} -eq 0 ] && stages=(release migrate asan tsan valgrind install abi aarch64 macos python rust)
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
    migrate)
        banner "KIO_DEBUG_MIGRATE=1 (release build): core suites"
        setup build-test --buildtype=debugoptimized
        run_suite build-test --setup migrate task sync time c_api io debug
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
    install)
        banner "install: meson install, pkg-config, SONAME, exports"
        scripts/install_test.sh
        ;;
    abi)
        banner "abi: libkio against abi/libkio.abi"
        scripts/abi_check.sh
        ;;
    aarch64)
        banner "aarch64: cross build, every test under qemu-user"
        scripts/cross_aarch64.sh
        ;;
    macos)
        banner "macos: libkio.dylib for x86_64 and arm64 (zig), exports"
        scripts/cross_macos.sh
        ;;
    python)
        banner "python: bindings/python tests against build-test/libkio.so"
        scripts/deps.sh test   # python3-pytest (Debian's /usr/bin/python3)
        setup build-test --buildtype=debugoptimized
        KIO_LIBRARY="$ROOT/build-test/libkio.so" PYTHONDONTWRITEBYTECODE=1 \
            /usr/bin/python3 -m pytest -p no:cacheprovider -q -rs bindings/python/tests
        ;;
    rust)
        banner "rust: bindings/rust (kio-sys, kio) against build-test/libkio.so"
        if ! command -v cargo >/dev/null; then
            echo "test.sh: the rust stage needs cargo (https://rustup.rs)" >&2
            exit 1
        fi
        setup build-test --buildtype=debugoptimized
        # --locked: Cargo.lock is checked in and never rewritten, so nothing
        # is written to the source tree (build output goes to build-test).
        (cd bindings/rust &&
            KIO_LIB_DIR="$ROOT/build-test" \
            LD_LIBRARY_PATH="$ROOT/build-test${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
            CARGO_TARGET_DIR="$ROOT/build-test/rust-target" KIO_SYS_REQUIRE_CC=1 \
            cargo test --offline --locked --workspace)
        ;;
    *) echo "test.sh: unknown stage $stage" >&2; exit 2 ;;
    esac
done
banner "all stages passed"
