#!/usr/bin/env bash
# The main job: installs what kio needs (Debian 12), builds it, and runs the
# examples so a newcomer sees the runtime at work in a minute.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
scripts/deps.sh build
[ -d build ] || meson setup build --buildtype=release >/dev/null
ninja -C build >/dev/null
echo "== examples/demo.c: tasks, await, mutex, sleep, cancellation"
build/examples/demo
