# shellcheck shell=sh
# The step's budget: every wait, download and service restart takes from the
# same STEP_TIMEOUT seconds, counted from STEP_START. The script's head sets
# both (budget_start sets them again for a budget given later).

budget_start() {
    STEP_TIMEOUT=$1
    STEP_START=$(date +%s)
}

# Seconds left of the budget, less RESERVE seconds kept for later (0 when spent).
budget_left() {
    _budget_left=$((STEP_START + STEP_TIMEOUT - ${1:-0} - $(date +%s)))
    [ "$_budget_left" -gt 0 ] || _budget_left=0
    echo "$_budget_left"
}

# Seconds left of the step's budget (never less than 1).
remaining() {
    _remaining=$(budget_left 0)
    [ "$_remaining" -gt 0 ] || _remaining=1
    echo "$_remaining"
}

# Waits (bounded, also by the step's budget) until a probe command succeeds:
# WHAT TRIES COMMAND [ARGS...], one try a second.
wait_for() {
    _wait_what=$1 _wait_tries=$2
    shift 2
    [ "$_wait_tries" -le "$(remaining)" ] || _wait_tries=$(remaining)
    _wait_i=0
    while [ "$_wait_i" -lt "$_wait_tries" ]; do
        if "$@" >/dev/null 2>&1; then
            return 0
        fi
        _wait_i=$((_wait_i + 1))
        sleep 1
    done
    log "$_wait_what did not become ready within ${_wait_tries}s"
    return 1
}
