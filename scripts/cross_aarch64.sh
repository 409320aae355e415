#!/usr/bin/env bash
# Cross-compiles libkio and the whole C/C++ test suite for aarch64 Linux with
# Debian's g++-aarch64-linux-gnu, and runs `meson test` under qemu-user
# (exe_wrapper in cross/aarch64-linux-gnu.ini).
#
#   scripts/cross_aarch64.sh [--build-only] [meson test args...]
#       e.g. scripts/cross_aarch64.sh --suite core
#
# Steps:
#   1. aarch64 libraries, all under build-aarch64-deps/ (nothing is installed
#      into the system):
#        sysroot/   Debian's arm64 libunwind-dev, libunwind8, liblzma-dev,
#                   liblzma5, unpacked with dpkg-deb -x. apt-get runs with a
#                   private state directory (apt/) and a sources list derived
#                   from the system's, restricted to arm64; the system's dpkg
#                   architectures and apt lists are left alone.
#        gtest/     libgtest.a and libgtest_main.a for aarch64, compiled from
#                   /usr/src/googletest (Debian googletest).
#        pkgconfig/ gtest.pc, gtest_main.pc, libunwind.pc for those.
#        paths.ini  the second cross file: pkg_config_libdir = pkgconfig/, and
#                   qemu's loader pointed at the unpacked shared libraries.
#      Redone only when the googletest package or the cross compiler changes.
#   2. meson setup build-aarch64 --cross-file cross/aarch64-linux-gnu.ini
#      --cross-file build-aarch64-deps/paths.ini (debugoptimized: -O2 -g),
#      then ninja.
#   3. Checks of the assembled context switch (folded in from
#      scripts/cross_aarch64_context.sh): kio_ctx_switch and kio_ctx_entry are
#      GLOBAL HIDDEN FUNCs, with .eh_frame, .note.GNU-stack, and the entry
#      trampoline's CFI ending the unwind chain.
#   4. meson test under qemu-aarch64. Emulation is several times slower than
#      hardware, so: KIO_STRESS_SCALE=5 (percent of the stress iteration
#      counts), KIO_TIME_SLACK=10 (the suite's multiplier for timing upper
#      bounds, as in the sanitizer builds), --timeout-multiplier 4.
#      Every test runs, the gdb helper's through gdb-multiarch attached to
#      qemu's gdb stub (details in step 4).
#
# Environment: BUILD (default build-aarch64), AARCH64_DEPS (default
# build-aarch64-deps), KIO_STRESS_SCALE, KIO_TIME_SLACK.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
scripts/deps.sh aarch64

build_only=0
test_args=()
for a in "$@"; do
    case "$a" in
        --build-only) build_only=1 ;;
        *) test_args+=("$a") ;;
    esac
done

BUILD=${BUILD:-build-aarch64}
DEPS=${AARCH64_DEPS:-$ROOT/build-aarch64-deps}
case "$DEPS" in /*) ;; *) DEPS="$ROOT/$DEPS" ;; esac
GTEST_SRC=/usr/src/googletest/googletest
CXX=aarch64-linux-gnu-g++
AR=aarch64-linux-gnu-ar
JOBS=$(nproc)
start=$(date +%s)
step() { printf -- '-- %s (%ss)\n' "$*" $(( $(date +%s) - start )); }

. "$ROOT/scripts/lib.sh"  # quiet

# --- 1. aarch64 libraries -------------------------------------------------------
arm64_debs=(libunwind-dev libunwind8 liblzma-dev liblzma5)
gtest_version=$(dpkg-query -W -f='${Version}' googletest)
stamp="deps v2; googletest $gtest_version; $($CXX --version | head -n1); ${arm64_debs[*]}"
if [ ! -f "$DEPS/stamp" ] || [ "$(cat "$DEPS/stamp")" != "$stamp" ]; then
    rm -rf "$DEPS"
    mkdir -p "$DEPS/gtest" "$DEPS/pkgconfig" "$DEPS/sysroot" "$DEPS/apt/debs" \
        "$DEPS/apt/lists/partial" "$DEPS/apt/cache/archives/partial"

    step "downloading arm64 ${arm64_debs[*]}"
    # The system's Debian sources (deb822 or one-line format), arm64 only.
    python3 - "$DEPS/apt/sources.list" <<'PY'
import glob, re, sys
out = []
for f in sorted(glob.glob('/etc/apt/sources.list.d/*.sources')):
    for stanza in open(f).read().split('\n\n'):
        kv = {}
        for line in stanza.splitlines():
            if line.startswith('#') or ':' not in line:
                continue
            k, v = line.split(':', 1)
            kv[k.strip()] = v.strip()
        if 'deb' not in kv.get('Types', '').split() or kv.get('Enabled', 'yes') == 'no':
            continue
        opts = 'arch=arm64' + (' signed-by=' + kv['Signed-By'] if 'Signed-By' in kv else '')
        for uri in kv.get('URIs', '').split():
            for suite in kv.get('Suites', '').split():
                out.append(f"deb [{opts}] {uri} {suite} {kv.get('Components', 'main')}")
for f in ['/etc/apt/sources.list'] + sorted(glob.glob('/etc/apt/sources.list.d/*.list')):
    try:
        lines = open(f).read().splitlines()
    except OSError:
        continue
    for line in lines:
        m = re.match(r'^deb\s+(\[[^]]*\]\s+)?(\S+)\s+(\S+)\s+(.*)$', line.strip())
        if m and 'debian' in m.group(2):
            out.append(f"deb [arch=arm64] {m.group(2)} {m.group(3)} {m.group(4)}")
if not out:
    sys.exit('no Debian apt sources found')
open(sys.argv[1], 'w').write('\n'.join(out) + '\n')
PY
    apt_opts=(-q -o Dir::Etc::SourceList="$DEPS/apt/sources.list"
        -o Dir::Etc::SourceParts="$DEPS/apt/none" -o Dir::State::Lists="$DEPS/apt/lists"
        -o Dir::Cache="$DEPS/apt/cache" -o APT::Architecture=arm64
        -o APT::Architectures::=arm64 -o APT::Sandbox::User=root -o Debug::NoLocking=1)
    quiet apt-get "${apt_opts[@]}" update
    (cd "$DEPS/apt/debs" && quiet apt-get "${apt_opts[@]}" download "${arm64_debs[@]}")
    for deb in "$DEPS"/apt/debs/*.deb; do dpkg-deb -x "$deb" "$DEPS/sysroot"; done
    rm -rf "$DEPS/apt/lists" "$DEPS/apt/cache"   # the package lists: 100+ MB

    step "building GoogleTest $gtest_version for aarch64"
    pids=()
    for f in gtest-all gtest_main; do
        $CXX -std=c++17 -O2 -fPIC -DGTEST_HAS_PTHREAD=1 -I"$GTEST_SRC/include" -I"$GTEST_SRC" \
            -c "$GTEST_SRC/src/$f.cc" -o "$DEPS/gtest/$f.o" &
        pids+=($!)
    done
    for p in "${pids[@]}"; do wait "$p"; done
    $AR rcs "$DEPS/gtest/libgtest.a" "$DEPS/gtest/gtest-all.o"
    $AR rcs "$DEPS/gtest/libgtest_main.a" "$DEPS/gtest/gtest_main.o"

    v=${gtest_version%%-*}
    cat > "$DEPS/pkgconfig/gtest.pc" <<EOF
libdir=$DEPS/gtest
includedir=$GTEST_SRC/include

Name: gtest
Description: GoogleTest (without main() function), built for aarch64 by scripts/cross_aarch64.sh
Version: $v
Libs: -L\${libdir} -lgtest -lpthread
Cflags: -I\${includedir} -DGTEST_HAS_PTHREAD=1
EOF
    cat > "$DEPS/pkgconfig/gtest_main.pc" <<EOF
libdir=$DEPS/gtest
includedir=$GTEST_SRC/include

Name: gtest_main
Description: GoogleTest (with main() function), built for aarch64 by scripts/cross_aarch64.sh
Version: $v
Requires: gtest = $v
Libs: -L\${libdir} -lgtest_main -lpthread
Cflags: -I\${includedir} -DGTEST_HAS_PTHREAD=1
EOF
    # Debian's libunwind.pc, pointed into the unpacked tree. -idirafter, not
    # -I: libunwind-dev ships an unwind.h that must not shadow GCC's (natively
    # the multiarch include directory also comes after GCC's own).
    uv=$(sed -n 's/^Version: *//p' "$DEPS/sysroot/usr/lib/aarch64-linux-gnu/pkgconfig/libunwind.pc")
    cat > "$DEPS/pkgconfig/libunwind.pc" <<EOF
prefix=$DEPS/sysroot/usr
libdir=\${prefix}/lib/aarch64-linux-gnu
includedir=\${prefix}/include/aarch64-linux-gnu

Name: libunwind
Description: libunwind base library (Debian arm64, unpacked by scripts/cross_aarch64.sh)
Version: $uv
Libs: -L\${libdir} -lunwind
Libs.private: -llzma
Cflags: -idirafter\${includedir}
EOF
    cat > "$DEPS/paths.ini" <<EOF
# Generated by scripts/cross_aarch64.sh: the second cross file of the aarch64
# build (after cross/aarch64-linux-gnu.ini). pkg-config sees only the aarch64
# GoogleTest and libunwind below; qemu's dynamic loader also searches the
# unpacked arm64 shared libraries (libunwind.so.8, liblzma.so.5).
[binaries]
exe_wrapper = ['qemu-aarch64', '-L', '/usr/aarch64-linux-gnu', '-E', 'LD_LIBRARY_PATH=$DEPS/sysroot/usr/lib/aarch64-linux-gnu:$DEPS/sysroot/lib/aarch64-linux-gnu']

[properties]
pkg_config_libdir = ['$DEPS/pkgconfig']

[built-in options]
# libunwind.so.8 needs liblzma.so.5: every link that pulls in libkio must
# find it (the linker does not follow libkio's own -rpath-link).
c_link_args = ['-Wl,-rpath-link,$DEPS/sysroot/usr/lib/aarch64-linux-gnu:$DEPS/sysroot/lib/aarch64-linux-gnu']
cpp_link_args = ['-Wl,-rpath-link,$DEPS/sysroot/usr/lib/aarch64-linux-gnu:$DEPS/sysroot/lib/aarch64-linux-gnu']
EOF
    echo "$stamp" > "$DEPS/stamp"
    rm -rf "$BUILD"   # configured with the old paths.ini
fi

# --- 2. configure and build ------------------------------------------------------
cross=(--cross-file cross/aarch64-linux-gnu.ini --cross-file "$DEPS/paths.ini")
opts=(--buildtype=debugoptimized -Dbenchmarks=false -Dexamples=true -Dtests=true)
if [ -f "$BUILD/meson-private/coredata.dat" ]; then
    step "reconfiguring $BUILD"
    quiet meson setup --reconfigure "$BUILD" "${opts[@]}"
else
    step "configuring $BUILD"
    rm -rf "$BUILD"
    quiet meson setup "$BUILD" "${cross[@]}" "${opts[@]}"
fi
step "building (ninja -j$JOBS)"
quiet ninja -C "$BUILD" -j "$JOBS"

# --- 3. what was built -------------------------------------------------------------
status=0
lib=$(find "$BUILD" -maxdepth 1 -name 'libkio.so.*.*.*' -type f | head -n1)
if grep -q 'ELF 64-bit LSB shared object, ARM aarch64' <<<"$(file -b "$lib")"; then
    echo "ok: $lib: $(file -b "$lib" | cut -d, -f1-2)"
else
    echo "FAIL: $lib is not an aarch64 shared object: $(file -b "$lib")"; status=1
fi
obj=$(find "$BUILD" -path '*libkio*' -name '*switch_aarch64_aapcs.S.o' | head -n1)
if [ -z "$obj" ]; then
    echo "FAIL: no object of asm/switch_aarch64_aapcs.S in $BUILD"; status=1
else
    for s in kio_ctx_switch kio_ctx_entry; do
        if grep -qE "FUNC +GLOBAL +HIDDEN .* $s\$" <<<"$(readelf -sW "$obj")"; then
            echo "ok: $s is a GLOBAL HIDDEN FUNC"
        else
            echo "FAIL: $obj: $s is not a GLOBAL HIDDEN FUNC"; status=1
        fi
    done
    grep -q '\.eh_frame' <<<"$(readelf -SW "$obj")" || { echo "FAIL: $obj: no .eh_frame"; status=1; }
    grep -q '\.note\.GNU-stack' <<<"$(readelf -SW "$obj")" || { echo "FAIL: $obj: no .note.GNU-stack"; status=1; }
    # The entry trampoline's FDE marks the return address (x30) undefined, so
    # unwinders stop at the bottom of a fiber stack.
    if grep -q 'DW_CFA_undefined: r30' <<<"$(readelf --debug-dump=frames "$obj")"; then
        echo "ok: kio_ctx_entry ends the unwind chain (DW_CFA_undefined r30)"
    else
        echo "FAIL: $obj: kio_ctx_entry lost .cfi_undefined x30"; status=1
    fi
fi
[ "$build_only" = 1 ] && exit "$status"

# --- 4. the test suite under qemu ----------------------------------------------------
export KIO_STRESS_SCALE=${KIO_STRESS_SCALE:-5}
export KIO_TIME_SLACK=${KIO_TIME_SLACK:-10}
# test/io_examples.sh: the servers and the load client run under qemu too.
export IO_EXAMPLES_BYTES=${IO_EXAMPLES_BYTES:-131072}
export NM=aarch64-linux-gnu-nm   # for test/check_exports.sh
sysroot_libs="$DEPS/sysroot/usr/lib/aarch64-linux-gnu:$DEPS/sysroot/lib/aarch64-linux-gnu"
wrapper=(qemu-aarch64 -L /usr/aarch64-linux-gnu -E "LD_LIBRARY_PATH=$sysroot_libs")

# debug_test starts its crash children (faults in fibers, a program's own
# SIGSEGV handler) by re-executing itself; the kernel cannot execve an aarch64
# binary without a binfmt_misc entry for qemu, so they go through
# KIO_TEST_EXE_WRAPPER (the emulator is a host program, which the emulated
# process may execute).
[ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || export KIO_TEST_EXE_WRAPPER="${wrapper[*]}"
# The gdb helper test runs gdb-multiarch against qemu's gdb stub (see
# test/gdb/gdb_test.sh; its core-file part does not apply under qemu-user).
# The stack-overflow reports run too: qemu-user accepts MADV_GUARD_INSTALL and
# ignores it, which kio detects and answers with mprotect guards, and the
# death test forks without re-executing when KIO_TEST_EXE_WRAPPER is set.
export KIO_GDB_QEMU="${wrapper[*]}"
export KIO_GDB_SYSROOT=/usr/aarch64-linux-gnu
case "$BUILD" in /*) build_abs=$BUILD ;; *) build_abs=$ROOT/$BUILD ;; esac
export KIO_GDB_SOLIB_PATH="$sysroot_libs:$build_abs"

step "meson test under qemu-aarch64 (KIO_STRESS_SCALE=$KIO_STRESS_SCALE KIO_TIME_SLACK=$KIO_TIME_SLACK)"
meson test -C "$BUILD" --print-errorlogs --num-processes "$JOBS" --timeout-multiplier 4 \
    ${test_args[@]+"${test_args[@]}"} || status=1
step "done"
if [ "$status" = 0 ]; then echo "cross_aarch64: OK"; else echo "cross_aarch64: FAILED"; fi
exit "$status"
