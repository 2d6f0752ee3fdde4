# shellcheck shell=sh
# The life of a step that changes the host: the lock, scratch space, and
# what is tidied on every exit.

# Every changing step: lock, then clear what a killed step left behind.
# PATHS, scratch made before the lock or outside SCRATCH, go when it ends.
begin_step() {
    on_exit "$@"
    take_lock
    rm -rf "$SCRATCH"
}

# Runs finish_step PATHS on every exit (also on TERM/INT/HUP).
on_exit() {
    # shellcheck disable=SC2064 # the paths are fixed now, each quoted
    trap "finish_step $(shell_quote "$@")" EXIT
    trap 'exit 129' HUP
    trap 'exit 130' INT
    trap 'exit 143' TERM
}

# Runs on every exit of a step that changes the host: PATHS to remove.
finish_step() {
    _step_rc=$?
    rm -rf "$@"
    holds_lock || return 0 # another step runs: its files are not ours to tidy
    if [ "$_step_rc" != 0 ]; then forget_unchanged; fi
    tidy_state
    release_lock
}

# Prints a new private scratch folder, removed when the step ends.
make_scratch() {
    mkdir -p "$SCRATCH"
    mktemp -d "$SCRATCH/step.XXXXXX"
}

# After destroy's last step nothing of ours stays: empty journal folders and
# the state folder itself go.
tidy_state() {
    rm -rf "$SCRATCH"
    [ ! -d "$STATE_DIR" ] || find "$STATE_DIR" -type d -empty -delete 2>/dev/null || true
}
