#!/usr/bin/env bash
# Checks `meson install` the way a packager and a user see it:
#   1. configures a fresh build directory with --prefix=<tmp>, builds, installs;
#   2. checks the layout: <prefix>/include/kio.h, <libdir>/libkio.so.0.1.0 with
#      the symlinks libkio.so.0 and libkio.so, <libdir>/pkgconfig/kio.pc;
#   3. checks the installed library: SONAME libkio.so.0 (readelf), and only
#      kio_* symbols defined in its dynamic symbol table (nm -D --defined-only);
#   4. compiles examples/demo.c against the installed copy with nothing but
#      `pkg-config --cflags --libs kio` (PKG_CONFIG_PATH=<libdir>/pkgconfig),
#      and runs it with LD_LIBRARY_PATH=<libdir>, checking that it loaded the
#      installed library.
#
#   scripts/install_test.sh [--keep]      --keep: leave the prefix in place
#
# Build directory: build-install (BUILD=... to change). Installs into a new
# mktemp directory, removed at the end unless --keep.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
scripts/deps.sh build

keep=0
for a in "$@"; do
    case "$a" in
        --keep) keep=1 ;;
        *) echo "install_test.sh: unknown argument $a" >&2; exit 2 ;;
    esac
done

. "$ROOT/scripts/lib.sh"  # quiet

BUILD=${BUILD:-build-install}
tmp=$(mktemp -d /tmp/kio-install.XXXXXX)
prefix="$tmp/prefix"
if [ "$keep" = 1 ]; then
    echo "install_test: prefix kept at $prefix"
else
    trap 'rm -rf "$tmp"' EXIT
fi

fail=0
ok() { echo "  ok: $*"; }
bad() { echo "  FAIL: $*" >&2; fail=1; }

version=$(meson introspect --projectinfo meson.build 2>/dev/null \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["version"])')
major=${version%%.*}

echo "== install_test: kio $version into $prefix"
# A fresh directory every time: the point is a clean configure with --prefix.
rm -rf "$BUILD"
quiet meson setup "$BUILD" --prefix="$prefix" --buildtype=release \
    -Dtests=false -Dbenchmarks=false -Dexamples=false >/dev/null
quiet ninja -C "$BUILD"
quiet meson install -C "$BUILD"

# --- layout -------------------------------------------------------------------
# libdir is whatever meson chose (lib/x86_64-linux-gnu on Debian, lib64 or lib
# elsewhere): find it through the .pc file.
pc=$(find "$prefix" -path '*/pkgconfig/kio.pc' | head -n1)
if [ -z "$pc" ]; then
    echo "FAIL: no pkgconfig/kio.pc under $prefix" >&2
    find "$prefix" >&2
    exit 1
fi
pcdir=$(dirname "$pc")
libdir=$(dirname "$pcdir")
echo "libdir: ${libdir#"$prefix"/}"

[ -f "$prefix/include/kio.h" ] && ok "include/kio.h" || bad "include/kio.h missing"
cmp -s "$prefix/include/kio.h" include/kio.h && ok "kio.h is the source header" \
    || bad "installed kio.h differs from include/kio.h"

real="libkio.so.$version"
if [ -f "$libdir/$real" ] && [ ! -L "$libdir/$real" ]; then ok "$real"; else bad "$real missing"; fi
check_link() {  # name, expected target
    local t
    if [ -L "$libdir/$1" ]; then
        t=$(readlink "$libdir/$1")
        [ "$(readlink -f "$libdir/$1")" = "$(readlink -f "$libdir/$real")" ] \
            && ok "$1 -> $t" || bad "$1 -> $t does not resolve to $real"
        [ "$t" = "$2" ] || echo "  note: $1 points to $t (expected $2; resolves correctly)"
    else
        bad "$1 is not a symlink"
    fi
}
check_link "libkio.so.$major" "$real"
check_link "libkio.so" "libkio.so.$major"

pcver=$(PKG_CONFIG_PATH="$pcdir" pkg-config --modversion kio)
[ "$pcver" = "$version" ] && ok "kio.pc version $pcver" || bad "kio.pc version $pcver != $version"

# --- the installed library ----------------------------------------------------
soname=$(readelf -dW "$libdir/$real" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
[ "$soname" = "libkio.so.$major" ] && ok "SONAME $soname" || bad "SONAME '$soname' != libkio.so.$major"

syms=$(nm -D --defined-only "$libdir/$real" | awk 'NF >= 3 { print $3 } NF == 2 { print $2 }')
nsyms=$(printf '%s\n' "$syms" | grep -c . || true)
others=$(printf '%s\n' "$syms" | grep -v '^kio_' || true)
if [ "$nsyms" -eq 0 ]; then
    bad "no defined dynamic symbols"
elif [ -n "$others" ]; then
    bad "exports outside kio_*: $(echo $others)"
else
    ok "$nsyms defined dynamic symbols, all kio_*"
fi
# Informational: functions the header declares that this library lacks (the
# 'exports' test of the test suite is the one that enforces this).
missing=""
for f in $(sed -n 's/^KIO_API[^(]*[ *]\(kio_[a-z0-9_]*\)(.*/\1/p' include/kio.h); do
    grep -qx "$f" <<<"$syms" || missing="$missing $f"
done
[ -z "$missing" ] || echo "  note: declared in kio.h but not exported:$missing"

# --- a user's program, built with pkg-config only -------------------------------
flags=$(PKG_CONFIG_PATH="$pcdir" pkg-config --cflags --libs kio)
echo "pkg-config --cflags --libs kio: $flags"
case "$flags" in
    *"$ROOT"*) bad "pkg-config flags point into the source tree" ;;
esac
# shellcheck disable=SC2086  # the flags are words
cc -std=c99 -Wall -Wextra -Werror examples/demo.c $flags -o "$tmp/demo" \
    && ok "examples/demo.c compiles and links" || bad "examples/demo.c does not build"
if [ -x "$tmp/demo" ]; then
    loaded=$(LD_LIBRARY_PATH="$libdir" ldd "$tmp/demo" | awk '$1 ~ /^libkio/ { print $3 }')
    [ "$(readlink -f "$loaded")" = "$(readlink -f "$libdir/$real")" ] \
        && ok "demo loads $loaded" || bad "demo loads '$loaded', not the installed copy"
    if out=$(LD_LIBRARY_PATH="$libdir" timeout 120 "$tmp/demo" 2>&1); then
        ok "demo runs (exit 0)"
        printf '%s\n' "$out" | sed 's/^/    | /'
        grep -q "kio $version" <<<"$out" || bad "demo did not report kio $version"
    else
        printf '%s\n' "$out" | sed 's/^/    | /'
        bad "demo failed"
    fi
fi

if [ "$fail" = 0 ]; then
    echo "install_test: OK"
else
    echo "install_test: FAILED" >&2
fi
exit "$fail"
