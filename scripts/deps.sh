#!/usr/bin/env bash
# Installs the Debian 12 packages kio's scripts need. Idempotent and quiet:
# skips apt entirely when everything is already installed.
#
#   scripts/deps.sh [build|test|bench]...    (default: build)
set -euo pipefail

build=(build-essential meson ninja-build pkg-config libgtest-dev libunwind-dev valgrind)
test=(gdb curl python3-pytest)
bench=(golang-go libboost-context-dev libboost-fiber-dev libuv1-dev wrk nginx-light python3-matplotlib)

want=()
[ $# -eq 0 ] && set -- build
for group in "$@"; do
    case "$group" in
        build) want+=("${build[@]}") ;;
        test) want+=("${build[@]}" "${test[@]}") ;;
        bench) want+=("${build[@]}" "${bench[@]}") ;;
        *) echo "deps.sh: unknown group $group" >&2; exit 2 ;;
    esac
done

missing=()
for p in "${want[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

SUDO=
[ "$(id -u)" -ne 0 ] && SUDO=sudo
echo "deps.sh: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
