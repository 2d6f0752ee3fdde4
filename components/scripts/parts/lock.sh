# shellcheck shell=sh
# One step at a time per host: two `pulumi up`s, or a person running the
# agent by hand, must not interleave writes to the same files. The kernel
# drops a flock(1) lock when its holder dies, so a killed step cannot leave the
# host locked. Without flock, a lock folder names its holder (PID and start
# time, against PID reuse) and is taken over once that process is gone.
# LOCK (the head) is the path; LOCKED, this part's own state, says how it is held.

take_lock() {
    mkdir -p "$(dirname "$LOCK")"
    if have flock; then
        take_flock
        LOCKED=flock
    else
        take_lock_dir
        LOCKED=dir
    fi
}

take_flock() {
    while :; do
        exec 9>>"$LOCK"
        flock -w "$(remaining)" 9 || lock_timeout
        # The holder before us removed the file on its way out: a lock on
        # a removed file guards nothing, so open the path again.
        [ "$(stat -c %d:%i "$LOCK" 2>/dev/null)" = "$(stat -L -c %d:%i "/proc/$$/fd/9")" ] && break
        exec 9>&-
    done
}

take_lock_dir() {
    _lock_empty=0
    until mkdir "$LOCK.d" 2>/dev/null; do
        _holder=$(cat "$LOCK.d/holder" 2>/dev/null || true)
        if [ -z "$_holder" ]; then
            _lock_empty=$((_lock_empty + 1)) # killed between mkdir and naming itself?
        fi
        if { [ -n "$_holder" ] && ! still_running "$_holder"; } || [ "$_lock_empty" -gt 5 ]; then
            log "taking over $LOCK.d from a step that no longer runs (${_holder:-unnamed})"
            rm -rf "$LOCK.d"
            _lock_empty=0
            continue
        fi
        [ "$(remaining)" -gt 1 ] || lock_timeout
        sleep 1
    done
    echo "$$ $(started_at $$)" > "$LOCK.d/holder"
}

lock_timeout() {
    die "another gvisor-fleet step still holds $LOCK after ${STEP_TIMEOUT}s (gvisor-fleet:stepTimeout); wait for the other 'pulumi up' or manual run to finish"
}

release_lock() {
    case ${LOCKED:-} in
        flock) rm -f "$LOCK" && exec 9>&- ;;
        dir) rm -rf "$LOCK.d" ;;
    esac
    LOCKED=""
}

# True while this process holds the lock.
holds_lock() { [ -n "${LOCKED:-}" ]; }

# Field 22 of /proc/PID/stat (after the command name, which may hold spaces).
started_at() { sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f20; }

still_running() {
    # shellcheck disable=SC2086 # "PID STARTTIME"
    set -- $1
    [ -n "${2:-}" ] && [ "$(started_at "$1")" = "$2" ]
}
