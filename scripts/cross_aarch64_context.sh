#!/usr/bin/env bash
# Builds and runs test/context_test.cpp (the context-switcher tests) for
# aarch64 with the Debian cross toolchain, under qemu-user; and, on an x86_64
# host, natively at -O0 and -O2; and checks that both switchers assemble for
# ELF (gcc, clang) and Mach-O (clang) with the expected symbols and unwind info.
#
# Usage: scripts/cross_aarch64_context.sh [--install] [--no-native] [--no-macho]
#   --install   apt-get install what is missing (needs root)
#
# These are the exact commands a meson cross file will need:
#   [binaries] cpp = 'aarch64-linux-gnu-g++', exe_wrapper = 'qemu-aarch64'
#   (static link, or QEMU_LD_PREFIX=/usr/aarch64-linux-gnu for a dynamic one).
# Outputs go to $OUT (default /tmp/kio-context-test); GoogleTest for aarch64 is
# built once into $GTEST_AARCH64 (default /tmp/gtest-aarch64).
#
# libunwind: the x86_64 build links Debian's libunwind (libunwind-dev) for the
# LibunwindWalk test. For aarch64 the test uses libunwind only if the arm64
# static libraries are found under $A64_UNWIND_ROOT (default: /), either
# installed (dpkg --add-architecture arm64; apt-get install libunwind-dev:arm64)
# or just unpacked without touching the system's dpkg state:
#   dpkg --add-architecture arm64 && apt-get update
#   apt-get download libunwind-dev:arm64 libunwind8:arm64 liblzma-dev:arm64
#   dpkg --remove-architecture arm64 && apt-get update
#   for d in *.deb; do dpkg-deb -x "$d" /tmp/arm64-sysroot; done
#   A64_UNWIND_ROOT=/tmp/arm64-sysroot scripts/cross_aarch64_context.sh
# Otherwise that one test is skipped on aarch64, and unwinding is still covered
# there by the _Unwind_Backtrace (libgcc) test.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-/tmp/kio-context-test}
GTEST_AARCH64=${GTEST_AARCH64:-/tmp/gtest-aarch64}
GTEST_SRC=${GTEST_SRC:-/usr/src/googletest/googletest}
CXXFLAGS_COMMON=(-std=c++17 -g -Wall -Wextra -I"$ROOT/lib")
TEST_SRC="$ROOT/test/context_test.cpp"

install=0 native=1 macho=1
for a in "$@"; do
    case "$a" in
        --install) install=1 ;;
        --no-native) native=0 ;;
        --no-macho) macho=0 ;;
        *) echo "unknown argument: $a" >&2; exit 2 ;;
    esac
done

if [ "$install" = 1 ]; then
    apt-get update
    apt-get install -y g++ g++-aarch64-linux-gnu qemu-user googletest libgtest-dev \
        libunwind-dev clang llvm
fi

mkdir -p "$OUT"
status=0
run() { echo "+ $*"; "$@"; }

# --- x86_64 native ----------------------------------------------------------
if [ "$native" = 1 ] && [ "$(uname -m)" = x86_64 ]; then
    for opt in -O2 -O0; do
        bin="$OUT/context_test_x86_64$opt"
        # -lgcc_s before -lunwind: both export _Unwind_*; keep libgcc's for
        # C++ exceptions and for the _Unwind_Backtrace test.
        run g++ "${CXXFLAGS_COMMON[@]}" "$opt" -DKIO_TEST_LIBUNWIND=1 \
            "$TEST_SRC" "$ROOT/asm/switch_x86_64_sysv.S" \
            -lgtest -lgtest_main -lpthread -lgcc_s -lunwind -o "$bin"
        run "$bin" || status=1
    done
fi

# --- aarch64 cross, under qemu ------------------------------------------------
CXX_A64=aarch64-linux-gnu-g++
if [ ! -f "$GTEST_AARCH64/lib/libgtest.a" ] || [ ! -f "$GTEST_AARCH64/lib/libgtest_main.a" ]; then
    mkdir -p "$GTEST_AARCH64/obj" "$GTEST_AARCH64/lib"
    for f in gtest-all gtest_main; do
        run $CXX_A64 -std=c++17 -O2 -I"$GTEST_SRC/include" -I"$GTEST_SRC" \
            -c "$GTEST_SRC/src/$f.cc" -o "$GTEST_AARCH64/obj/$f.o"
    done
    run aarch64-linux-gnu-ar rcs "$GTEST_AARCH64/lib/libgtest.a" "$GTEST_AARCH64/obj/gtest-all.o"
    run aarch64-linux-gnu-ar rcs "$GTEST_AARCH64/lib/libgtest_main.a" "$GTEST_AARCH64/obj/gtest_main.o"
fi

A64_UNWIND_CFLAGS=() A64_UNWIND_LIBS=()
R=${A64_UNWIND_ROOT:-}
if [ -f "$R/usr/lib/aarch64-linux-gnu/libunwind.a" ] && [ -f "$R/usr/include/aarch64-linux-gnu/libunwind.h" ]; then
    # Debian's arm64 libunwind (multiarch, or unpacked). Static: needs liblzma.
    # -lgcc_eh first: libgcc keeps _Unwind_* (exceptions, _Unwind_Backtrace
    # test); libunwind.a then only contributes the unw_* API.
    A64_UNWIND_CFLAGS=(-DKIO_TEST_LIBUNWIND=1 -idirafter "$R/usr/include/aarch64-linux-gnu")
    A64_UNWIND_LIBS=(-lgcc_eh -L"$R/usr/lib/aarch64-linux-gnu" -lunwind -llzma)
else
    echo "note: no arm64 libunwind: Context.LibunwindWalk* will be skipped on aarch64"
fi

for opt in -O2 -O0; do
    bin="$OUT/context_test_aarch64$opt"
    run $CXX_A64 "${CXXFLAGS_COMMON[@]}" "$opt" -static -I"$GTEST_SRC/include" \
        "$TEST_SRC" "$ROOT/asm/switch_aarch64_aapcs.S" \
        ${A64_UNWIND_CFLAGS[@]+"${A64_UNWIND_CFLAGS[@]}"} \
        -L"$GTEST_AARCH64/lib" -lgtest -lgtest_main -lpthread \
        ${A64_UNWIND_LIBS[@]+"${A64_UNWIND_LIBS[@]}"} -o "$bin"
    run qemu-aarch64 "$bin" || status=1
done

# --- assembling: ELF (gcc, clang) and Mach-O (clang) --------------------------
asm_dir="$OUT/asm"
mkdir -p "$asm_dir"
run gcc -c "$ROOT/asm/switch_x86_64_sysv.S" -o "$asm_dir/x86_64-elf-gcc.o"
run aarch64-linux-gnu-gcc -c "$ROOT/asm/switch_aarch64_aapcs.S" -o "$asm_dir/aarch64-elf-gcc.o"
if command -v clang >/dev/null; then
    run clang -c -target x86_64-linux-gnu "$ROOT/asm/switch_x86_64_sysv.S" -o "$asm_dir/x86_64-elf-clang.o"
    run clang -c -target aarch64-linux-gnu "$ROOT/asm/switch_aarch64_aapcs.S" -o "$asm_dir/aarch64-elf-clang.o"
fi
for obj in "$asm_dir"/*-elf-*.o; do
    for s in kio_ctx_switch kio_ctx_entry; do
        if ! grep -qE "FUNC +GLOBAL +HIDDEN .* $s\$" <<<"$(readelf -sW "$obj")"; then
            echo "FAIL: $obj: $s is not a GLOBAL HIDDEN FUNC"; status=1
        fi
    done
    if ! grep -q '\.eh_frame' <<<"$(readelf -SW "$obj")"; then echo "FAIL: $obj: no .eh_frame"; status=1; fi
    if ! grep -q '\.note\.GNU-stack' <<<"$(readelf -SW "$obj")"; then echo "FAIL: $obj: no .note.GNU-stack"; status=1; fi
done

if [ "$macho" = 1 ] && command -v clang >/dev/null && command -v llvm-nm >/dev/null; then
    run clang -c -target x86_64-apple-macos11 "$ROOT/asm/switch_x86_64_sysv.S" -o "$asm_dir/x86_64-macho.o"
    run clang -c -target arm64-apple-macos11 "$ROOT/asm/switch_aarch64_aapcs.S" -o "$asm_dir/arm64-macho.o"
    for obj in "$asm_dir"/*-macho.o; do
        syms=$(llvm-nm -m "$obj")
        echo "$syms"
        for s in _kio_ctx_switch _kio_ctx_entry; do
            grep -qE "\(__TEXT,__text\) private external $s\$" <<<"$syms" \
                || { echo "FAIL: $obj: $s missing or not private extern"; status=1; }
        done
        sects=$(llvm-objdump -h "$obj")
        # arm64 gets __compact_unwind entries (DWARF mode, pointing at
        # __eh_frame); x86_64's CFI cannot be encoded compactly, so it has
        # only __eh_frame, which ld64 turns into unwind info.
        grep -q __eh_frame <<<"$sects" || { echo "FAIL: $obj: no __eh_frame"; status=1; }
        # The trampoline's FDE must keep the "return address undefined" rule.
        grep -qE 'DW_CFA_undefined: (RIP|W30)' <<<"$(llvm-dwarfdump --eh-frame "$obj")" \
            || { echo "FAIL: $obj: kio_ctx_entry lost .cfi_undefined"; status=1; }
    done
fi

if [ "$status" = 0 ]; then echo "cross_aarch64_context: all OK"; else echo "cross_aarch64_context: FAILURES"; fi
exit "$status"
