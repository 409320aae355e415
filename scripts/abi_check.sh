#!/usr/bin/env bash
# ABI check of libkio against the committed baseline abi/libkio.abi, with
# libabigail (Debian abigail-tools).
#
#   scripts/abi_check.sh            rebuild libkio, compare with the baseline
#   scripts/abi_check.sh --update   rebuild libkio, rewrite the baseline
#
# What passes and what fails:
#   - new functions (or variables) exported by the library: allowed, listed;
#   - fields appended to a size-versioned struct (one whose first member is
#     `size_t size`, set by the caller: kio_options, kio_spawn_options,
#     kio_stats), at offsets past the old struct's end: allowed, listed;
#   - anything else abidiff reports against the public header's view of the
#     ABI fails: a removed or renamed function (abidiff's "incompatible
#     change" bit, 8), a changed signature, any other change to a public type
#     (a reordered or retyped field, a field inserted before the end or into
#     tail padding, a changed kio_mutex / kio_cond / kio_cq_event), a changed
#     SONAME (abidiff's "ABI change" bit, 4, left after added functions are
#     filtered out with --no-added-syms; its leaf-changes report is parsed
#     for the struct appends).
#   abidiff sets only bit 4, never bit 8, for type changes, so checking bit 8
#   alone would let layout breaks through; this script fails on either bit.
#
# Updating the baseline deliberately (and only then):
#   1. run scripts/abi_check.sh and read the report;
#   2. if every reported change is intended and compatible for users of
#      libkio.so.0, or the SONAME is being bumped for an intended break, run
#      scripts/abi_check.sh --update;
#   3. commit abi/libkio.abi together with the change, and say why in
#      CHANGELOG.md. Added functions need no update (they pass), but refresh
#      the baseline at each release so later removals of them are caught.
#
# The library is built in build-abi (BUILD=... to change) with
# --buildtype=debugoptimized: abidw reads the DWARF, so -g is needed, and
# -O2 is what a release ships. Only types reachable from include/kio.h count
# (--headers-dir include).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
scripts/deps.sh abi

update=0
for a in "$@"; do
    case "$a" in
        --update) update=1 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "abi_check.sh: unknown argument $a" >&2; exit 2 ;;
    esac
done

. "$ROOT/scripts/lib.sh"  # quiet

BUILD=${BUILD:-build-abi}
BASELINE=abi/libkio.abi

if [ -d "$BUILD" ]; then
    quiet meson setup --reconfigure "$BUILD" --buildtype=debugoptimized \
        -Dtests=false -Dbenchmarks=false -Dexamples=false
else
    quiet meson setup "$BUILD" --buildtype=debugoptimized \
        -Dtests=false -Dbenchmarks=false -Dexamples=false
fi
quiet ninja -C "$BUILD"
lib=$(find "$BUILD" -maxdepth 1 -name 'libkio.so.*.*.*' -type f | head -n1)
[ -n "$lib" ] || { echo "abi_check: no libkio.so.X.Y.Z in $BUILD" >&2; exit 1; }

# Stable output: no absolute build paths (corpus path, compilation dirs), so
# the baseline does not depend on where the tree is checked out.
abidw_args=(--headers-dir include --drop-private-types --exported-interfaces-only
            --no-corpus-path --no-comp-dir-path)

if [ "$update" = 1 ]; then
    mkdir -p abi
    abidw "${abidw_args[@]}" --out-file "$BASELINE" "$lib"
    nfun=$(grep -c '<elf-symbol name=.kio_' "$BASELINE" || true)
    echo "abi_check: wrote $BASELINE from $lib ($nfun kio_* symbols); commit it"
    exit 0
fi

[ -f "$BASELINE" ] || { echo "abi_check: no $BASELINE; create it with --update" >&2; exit 1; }

# 1. The full report, for the log (added functions show up here).
set +e
abidiff --exported-interfaces-only --hd2 include "$BASELINE" "$lib" > "$BUILD/abidiff-full.txt" 2>&1
full=$?
# 2. The verdict: leaf changes only (each changed type once), added symbols
# filtered out.
abidiff --exported-interfaces-only --no-added-syms --leaf-changes-only --hd2 include \
    "$BASELINE" "$lib" > "$BUILD/abidiff.txt" 2>&1
rc=$?
set -e

echo "abidiff $BASELINE $lib (exit $full):"
sed 's/^/  /' "$BUILD/abidiff-full.txt"

if [ $((rc & 3)) -ne 0 ]; then
    echo "abi_check: abidiff failed to run (exit $rc)" >&2
    cat "$BUILD/abidiff.txt" >&2
    exit 1
fi
if [ $((rc & 8)) -ne 0 ]; then
    echo "abi_check: FAIL: incompatible ABI change (removed symbols); see above" >&2
    exit 1
fi
if [ $((rc & 4)) -ne 0 ]; then
    # The one kind of type change that stays compatible: fields appended to a
    # size-versioned struct (first member `size_t size`, which callers set;
    # the library touches only fields within it), past the old struct's end
    # (not into its tail padding: an old caller's size covers the padding).
    if python3 - "$BUILD/abidiff.txt" include/kio.h <<'PY'
import re, sys
report = open(sys.argv[1]).read().splitlines()
header = open(sys.argv[2]).read()
sized = set(re.findall(r'struct\s+(\w+)\s*\{\s*size_t\s+size\s*;', header))
ok_summary = [
    r'Leaf changes summary: \d+ artifacts? changed.*',
    r'Changed leaf types summary: \d+ leaf types? changed.*',
    r'Removed/Changed/Added functions summary: 0 Removed, 0 Changed, \d+ Added functions?.*',
    r'Removed/Changed/Added variables summary: 0 Removed, 0 Changed, \d+ Added variables?.*',
]
bad, appended = [], []
i = 0
while i < len(report):
    line = report[i]
    if not line.strip() or any(re.fullmatch(p, line) for p in ok_summary):
        i += 1
        continue
    m = re.fullmatch(r"'struct (\w+) at [^']*' changed:", line)
    if not m or m.group(1) not in sized:
        bad.append(line)
        i += 1
        continue
    name, old_size, block_ok = m.group(1), None, True
    i += 1
    while i < len(report) and report[i].startswith('  '):
        l = report[i].strip()
        sm = re.fullmatch(r'type size changed from (\d+) to (\d+) \(in bits\)', l)
        om = re.fullmatch(r"'.*', at offset (\d+) \(in bits\)( at .*)?", l)
        if sm and int(sm.group(2)) > int(sm.group(1)):
            old_size = int(sm.group(1))
        elif re.fullmatch(r'\d+ data member insertions?:', l):
            pass
        elif om and old_size is not None and int(om.group(1)) >= old_size:
            pass
        else:
            block_ok = False
        i += 1
    if block_ok and old_size is not None:
        appended.append(name)
    else:
        bad.append(line)
if bad:
    print('not an append to a size-versioned struct:', *bad, sep='\n  ')
    sys.exit(1)
print('fields appended to size-versioned structs (compatible): ' + ', '.join(appended))
PY
    then
        echo "abi_check: OK (additions only; refresh the baseline with --update at release time)"
        exit 0
    fi
    echo "abi_check: FAIL: ABI change other than additions:" >&2
    sed 's/^/  /' "$BUILD/abidiff.txt" >&2
    echo "abi_check: if intended and compatible, run scripts/abi_check.sh --update (see its header)" >&2
    exit 1
fi
if [ $((full & 4)) -ne 0 ]; then
    echo "abi_check: OK (additions only; refresh the baseline with --update at release time)"
else
    echo "abi_check: OK (no change)"
fi
