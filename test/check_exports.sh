#!/bin/sh
# Fails if the shared library exports any defined dynamic symbol that does
# not start with kio_, and (given the header) if a function the header
# declares with KIO_API is missing.
# Usage: check_exports.sh <path/to/libkio.so> [path/to/kio.h]
set -eu
lib=${1:?usage: check_exports.sh path/to/libkio.so [kio.h]}
hdr=${2:-}
NM=${NM:-nm}
syms=$("$NM" -D --defined-only "$lib" | awk 'NF >= 3 { print $3 } NF == 2 { print $2 }')
if [ -z "$syms" ]; then
    echo "FAIL: no defined dynamic symbols in $lib" >&2
    exit 1
fi
bad=$(printf '%s\n' "$syms" | grep -v '^kio_' || true)
if [ -n "$bad" ]; then
    echo "FAIL: symbols outside the kio_ namespace exported by $lib:" >&2
    printf '  %s\n' $bad >&2
    exit 1
fi
if [ -n "$hdr" ]; then
    missing=""
    for f in $(sed -n 's/^KIO_API[^(]*[ *]\(kio_[a-z0-9_]*\)(.*/\1/p' "$hdr"); do
        printf '%s\n' "$syms" | grep -qx "$f" || missing="$missing $f"
    done
    if [ -n "$missing" ]; then
        echo "FAIL: declared in $hdr but not exported by $lib:$missing" >&2
        exit 1
    fi
fi
n=$(printf '%s\n' "$syms" | wc -l)
echo "$n exported symbols, all kio_*"
