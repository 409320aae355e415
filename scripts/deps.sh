#!/usr/bin/env bash
# Installs the Debian 12 packages kio's scripts need. Idempotent and quiet:
# skips apt entirely when everything is already installed.
#
#   scripts/deps.sh [build|test|bench|abi|aarch64|macos]...    (default: build)
#
# abi, aarch64 and macos are the packaging stages of scripts/test.sh
# (scripts/abi_check.sh, scripts/cross_aarch64.sh, scripts/cross_macos.sh).
set -euo pipefail

build=(build-essential meson ninja-build pkg-config libgtest-dev libunwind-dev valgrind)
test=(gdb curl wrk python3-pytest)
bench=(golang-go libboost-context-dev libboost-fiber-dev libuv1-dev wrk curl nginx-light python3-matplotlib)
abi=(abigail-tools)
aarch64=(g++-aarch64-linux-gnu qemu-user googletest gdb gdb-multiarch)
macos=(llvm file nodejs)   # zig itself comes from npm (scripts/cross_macos.sh)

want=()
[ $# -eq 0 ] && set -- build
for group in "$@"; do
    case "$group" in
        build) want+=("${build[@]}") ;;
        test) want+=("${build[@]}" "${test[@]}") ;;
        bench) want+=("${build[@]}" "${bench[@]}") ;;
        abi) want+=("${build[@]}" "${abi[@]}") ;;
        aarch64) want+=("${build[@]}" "${aarch64[@]}") ;;
        macos) want+=("${build[@]}" "${macos[@]}") ;;
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
