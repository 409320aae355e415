#!/bin/sh
# Compiles include/kio.h on its own as strict C99 and as C++98 and C++11,
# warnings as errors. Usage: check_header.sh <path/to/kio.h>
set -eu
hdr=${1:?usage: check_header.sh path/to/kio.h}
CC=${CC:-gcc}
CXX=${CXX:-g++}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM

# The header alone, then a translation unit that includes it twice (include
# guard) and uses the static initializers.
printf '#include "%s"\n' "$hdr" > "$tmp/alone.c"
cat > "$tmp/use.c" <<EOT
#include "$hdr"
#include "$hdr"
static kio_mutex m = KIO_MUTEX_INIT;
static kio_cond c = KIO_COND_INIT;
int kio_header_check(void);
int kio_header_check(void) { return (int)(sizeof m + sizeof c) + KIO_VERSION_MAJOR; }
EOT
cp "$tmp/alone.c" "$tmp/alone.cpp"
cp "$tmp/use.c" "$tmp/use.cpp"

status=0
for f in alone.c use.c; do
    if ! "$CC" -std=c99 -Wall -Wextra -pedantic -Werror -fsyntax-only "$tmp/$f"; then
        echo "FAIL: $CC -std=c99 -Wall -Wextra -pedantic -Werror ($f)" >&2
        status=1
    fi
done
for std in c++98 c++11; do
    for f in alone.cpp use.cpp; do
        if ! "$CXX" -std=$std -Wall -Wextra -pedantic -Werror -fsyntax-only "$tmp/$f"; then
            echo "FAIL: $CXX -std=$std -Wall -Wextra -pedantic -Werror ($f)" >&2
            status=1
        fi
    done
done
[ $status -eq 0 ] && echo "kio.h compiles as C99, C++98 and C++11"
exit $status
