#!/usr/bin/env bash
# Tests scripts/kio-gdb.py against test/gdb/gdb_target.c, a program whose
# fibers are parked in known functions (see its header comment).
#
#   gdb_test.sh GDB_TARGET KIO_GDB_PY
#
# 1. A live process stopped at a breakpoint: `kio tasks` shows every task with
#    its state, `kio bt <id>` (ids read from the program's globals) shows the
#    function each fiber parked in, the thread's own backtrace is intact
#    afterwards, and the program still runs to a clean exit.
# 2. A core file dumped by the kernel (SIGABRT at the same point): the same
#    listing and backtraces. Skipped (with a note) when the system does not
#    write core files into the working directory (core_pattern is a pipe or
#    a path elsewhere).
# Exit 77 (meson: skipped) when gdb is missing or cannot trace processes.
#
# An emulated target (scripts/cross_aarch64.sh): KIO_GDB_QEMU is the qemu-user
# command that runs it (e.g. "qemu-aarch64 -L SYSROOT"); the live process then
# runs under qemu's gdb stub and gdb-multiarch attaches with `target remote`.
# KIO_GDB_SYSROOT and KIO_GDB_SOLIB_PATH tell gdb where the target's libraries
# are. qemu-user's own core files do not record where the program and its
# libraries were loaded, so the core part is skipped there (with a note).
set -uo pipefail

TARGET=$(readlink -f "$1")
SCRIPT=$(readlink -f "$2")
QEMU=${KIO_GDB_QEMU:-}
if [ -n "$QEMU" ]; then GDB=${GDB:-gdb-multiarch}; else GDB=${GDB:-gdb}; fi
command -v "$GDB" >/dev/null || { echo "$GDB not found: skipped"; exit 77; }
gdb_setup=()
[ -n "${KIO_GDB_SYSROOT:-}" ] && gdb_setup+=(-ex "set sysroot $KIO_GDB_SYSROOT")
[ -n "${KIO_GDB_SOLIB_PATH:-}" ] && gdb_setup+=(-ex "set solib-search-path $KIO_GDB_SOLIB_PATH")

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"

failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }
expect() {  # file, extended regex, description
    if grep -Eq -- "$2" "$1"; then echo "ok: $3"; else fail "$3 (no match for /$2/ in $1)"; fi
}
# The lines of `kio bt` output for one task: from its header to the next header.
section() {  # file, task name
    awk -v name="'$2'" '
        /^task [0-9]+ / { on = index($0, name ":") > 0 }
        on { print }' "$1"
}

run_gdb() {  # output file, gdb arguments...
    local out=$1; shift
    timeout 300 "$GDB" -nx -batch -x "$SCRIPT" ${gdb_setup[@]+"${gdb_setup[@]}"} "$@" >"$out" 2>&1
}

# Sets `start` to the gdb commands that start the target and stop at its
# first breakpoint: `run`, or, under qemu-user, `target remote` to the gdb
# stub of an emulator started here (QEMU_PID; it exits with the program).
QEMU_PID=
start=()
start_target() {
    if [ -z "$QEMU" ]; then
        start=(-ex run)
        return
    fi
    local port tries
    for tries in 1 2 3 4 5; do
        port=$((20000 + RANDOM % 20000))
        $QEMU -g "$port" "$TARGET" >"qemu.$port.out" 2>&1 &
        QEMU_PID=$!
        # Wait for the stub to listen (not by connecting: it takes one client).
        for _ in $(seq 100); do
            if grep -qi ":$(printf '%04X' "$port") 00000000:0000 0A" /proc/net/tcp /proc/net/tcp6 2>/dev/null; then
                start=(-ex "target remote :$port" -ex continue)
                return
            fi
            kill -0 "$QEMU_PID" 2>/dev/null || break  # port taken: try another
            sleep 0.1
        done
        kill "$QEMU_PID" 2>/dev/null
        wait "$QEMU_PID" 2>/dev/null
    done
    echo "qemu's gdb stub did not start (see qemu.*.out)"
    cat qemu.*.out
    exit 1
}

# kio bt for the task whose id is in the program's global NAME_id, by number.
bt_by_id() { echo "python gdb.execute('kio bt %d' % int(gdb.parse_and_eval('$1_id')))"; }

check_listing() {  # file, label
    local f=$1 l=$2
    expect "$f" "^runtime 0x[0-9a-f]+: 2 of 2 workers started" "$l: runtime header"
    expect "$f" "^  task 1 'main': running on worker [0-9]+ \(gdb thread ${MAIN_THREAD:-[0-9]+}\)$" "$l: main running"
    expect "$f" "^  task [0-9]+ 'alpha': parked: sleep until (now\+3[0-9]{3}\.[0-9]{3} s|kio_now\(\)=[0-9]+)$" "$l: alpha sleeping"
    expect "$f" "^  task [0-9]+ 'beta': parked: mutex 0x[0-9a-f]+ held by task 1$" "$l: beta on the mutex main holds"
    expect "$f" "^  task [0-9]+ 'gamma': parked: condition 0x[0-9a-f]+$" "$l: gamma on the condition"
    expect "$f" "^  task [0-9]+ 'delta': parked: await of task ${GAMMA_ID:-[0-9]+}$" "$l: delta awaiting gamma"
    expect "$f" "^  task [0-9]+ 'eps': parked: descriptor fd [0-9]+ read$" "$l: eps reading a pipe"
}

check_bt() {  # file, label, task name, function...
    local f=$1 l=$2 name=$3; shift 3
    section "$f" "$name" >"$f.$name"
    [ -s "$f.$name" ] || { fail "$l: no kio bt output for $name"; return; }
    for fn in "$@"; do
        expect "$f.$name" "^#[0-9]+ .*[ :]$fn \(" "$l: kio bt $name names $fn"
    done
    expect "$f.$name" "^#0 .*kio_ctx_switch|^#0 .*switch_to" "$l: kio bt $name starts at the switch"
    expect "$f.$name" "kio_ctx_entry \(\)" "$l: kio bt $name ends at the fiber's root"
}

check_bts() {  # file, label
    check_bt "$1" "$2" alpha wait_here_alpha kio_sleep run_alpha
    check_bt "$1" "$2" beta wait_here_beta kio_mutex_lock run_beta
    check_bt "$1" "$2" gamma wait_here_gamma kio_cond_wait run_gamma
    check_bt "$1" "$2" delta wait_here_delta kio_await run_delta
    check_bt "$1" "$2" eps wait_here_eps kio_read run_eps
}

# ---------------------------------------------------------------------------
# 1. Live process.
echo "== live process"
start_target
run_gdb live.txt -ex 'set pagination off' -ex 'break kio_gdb_target_ready' "${start[@]}" \
    -ex 'echo ==tasks==\n' -ex 'kio tasks' \
    -ex 'echo ==bt==\n' \
    -ex "$(bt_by_id alpha)" -ex "$(bt_by_id beta)" -ex "$(bt_by_id gamma)" \
    -ex "$(bt_by_id delta)" -ex "$(bt_by_id eps)" \
    -ex 'echo ==bt-by-name==\n' -ex 'kio bt beta 3' \
    -ex 'echo ==thread-bt==\n' -ex 'bt' \
    -ex 'echo ==gamma-id==\n' -ex 'print gamma_id' \
    -ex 'delete' -ex 'continue' \
    "$TARGET"
if grep -q "ptrace: Operation not permitted\|Could not trace the inferior process\|not permitted" live.txt &&
   ! grep -q "==tasks==" live.txt; then
    cat live.txt
    echo "gdb cannot trace processes here: skipped"
    exit 77
fi
[ -n "$QEMU_PID" ] && wait "$QEMU_PID"
GAMMA_ID=$(sed -n '/==gamma-id==/{n;s/^\$[0-9]* = //p}' live.txt)
# The gdb thread that stopped at the breakpoint runs the main fiber.
MAIN_THREAD=$(sed -n 's/^Thread \([0-9]*\) .*hit Breakpoint.*/\1/p' live.txt | head -n 1)
sed -n '/==tasks==/,/==bt==/p' live.txt >live.tasks
sed -n '/==bt==/,/==bt-by-name==/p' live.txt >live.bt
sed -n '/==bt-by-name==/,/==thread-bt==/p' live.txt >live.bt3
sed -n '/==thread-bt==/,/==gamma-id==/p' live.txt >live.thread
check_listing live.tasks live
check_bts live.bt live
# `kio bt beta 3`: a name, and a frame count that counts the fiber's frames.
expect live.bt3 "^task [0-9]+ 'beta': parked: mutex" "live: kio bt by name"
n=$(grep -c '^#' live.bt3)
[ "$n" -eq 3 ] && echo "ok: kio bt beta 3 shows 3 frames" || fail "kio bt beta 3 shows $n frames, not 3"
# The thread's own backtrace is untouched afterwards.
expect live.thread "^#0 +kio_gdb_target_ready \(\)" "live: thread backtrace restored (frame 0)"
expect live.thread "^#1 .* main \(" "live: thread backtrace restored (frame 1)"
expect live.txt "exited normally" "live: the program runs on to a clean exit"
if grep -q "Python Exception\|Error occurred in Python" live.txt; then fail "live: Python errors"; fi

# ---------------------------------------------------------------------------
# 2. Core file written by the kernel.
echo "== core file"
rm -f core core.*
pattern=$(cat /proc/sys/kernel/core_pattern 2>/dev/null || echo "?")
if [ -n "$QEMU" ]; then
    echo "note: core part skipped under qemu-user (its core files lack the load addresses gdb needs)"
else
( ulimit -c unlimited 2>/dev/null
  timeout 300 "$GDB" -nx -batch -ex 'break kio_gdb_target_ready' -ex 'run' -ex 'signal SIGABRT' \
      "$TARGET" >abort.txt 2>&1 )
corefile=$(ls core core.* 2>/dev/null | head -n 1)
if [ -z "$corefile" ]; then
    echo "note: no core file in the working directory (core_pattern '$pattern', ulimit -c $(ulimit -c)): core part skipped"
else
    run_gdb core.txt -ex 'echo ==tasks==\n' -ex 'kio tasks' -ex 'echo ==bt==\n' \
        -ex "$(bt_by_id alpha)" -ex "$(bt_by_id beta)" -ex "$(bt_by_id gamma)" \
        -ex "$(bt_by_id delta)" -ex "$(bt_by_id eps)" -ex 'echo ==end==\n' \
        "$TARGET" "$corefile"
    sed -n '/==tasks==/,/==bt==/p' core.txt >core.tasks
    sed -n '/==bt==/,/==end==/p' core.txt >core.bt
    GAMMA_ID= MAIN_THREAD= check_listing core.tasks core
    check_bts core.bt core
    if grep -q "Python Exception\|Error occurred in Python" core.txt; then fail "core: Python errors"; fi
fi
fi

if [ "$failures" -ne 0 ]; then
    echo "---- live gdb output"; cat live.txt
    [ -f core.txt ] && { echo "---- core gdb output"; cat core.txt; }
    echo "$failures check(s) failed"
    exit 1
fi
echo "all gdb checks passed"
