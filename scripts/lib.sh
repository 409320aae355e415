# Shell helpers shared by the scripts in this directory (source it).

# Runs a command with its output hidden, unless it fails: then prints the
# command and the last lines of its output, and returns its status.
quiet() {
    local log rc=0
    log=$(mktemp)
    "$@" >"$log" 2>&1 || rc=$?
    if [ "$rc" -eq 0 ]; then rm -f "$log"; return 0; fi
    echo "FAILED ($rc): $*" >&2
    tail -n "${QUIET_TAIL:-80}" "$log" >&2
    rm -f "$log"
    return "$rc"
}
