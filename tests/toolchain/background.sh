# shellcheck shell=sh
# Sourced by tests/setup.sh and tests/run.sh: one long build in the
# background while the script goes on, its output kept in a log.
#
#   background_start NAME COMMAND...   start it, in its own session
#   background_stop                    stop it and everything under it (for an EXIT trap)
#   background_wait WHAT               wait; print the log's tail, or all of it when it failed

background_pid=""
background_log=""

background_start() {
    background_log=$(mktemp "${TMPDIR:-/tmp}/gvisor-fleet-$1.XXXXXX")
    shift
    # Its own session: a stop reaches the builds under it, and a Ctrl-C in
    # the terminal reaches it only through the script's own traps.
    setsid "$@" >"$background_log" 2>&1 &
    background_pid=$!
}

background_stop() {
    [ -z "$background_pid" ] || kill -TERM "-$background_pid" 2>/dev/null || :
}

background_wait() {
    [ -n "$background_pid" ] || return 0
    pid=$background_pid
    background_pid=""
    if wait "$pid"; then
        tail -n 2 "$background_log"
        rm -f "$background_log"
    else
        cat "$background_log"
        echo "$1 failed (its log is above, and in $background_log)" >&2
        return 1
    fi
}
