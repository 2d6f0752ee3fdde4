# shellcheck shell=sh
# Test hook, inert in production (nothing sets GVISOR_FLEET_TEST_STOP_AT):
# the script stops itself at the named point so a test can SIGKILL it exactly there.
checkpoint() {
    [ "${GVISOR_FLEET_TEST_STOP_AT:-}" = "$1" ] || return 0
    log "stopped at $1 (pid $$)"
    kill -STOP $$
}
