# shellcheck shell=sh disable=SC2034 # the constants are read by later parts
# What the sandbox costs on this host: runc against runsc, through the same
# container engine and on the same image. Sent on stdin by the
# OverheadMeasurement component and run as
#   sh -s -- measure ENGINE DOCKER_MODE CONTAINERD_MODE RUNTIME IMAGE INSTALL_DIR RUNSC_TOML PLATFORM BUDGET RUNS RELEASE
# Prints one line, overhead=<compact JSON>, on stdout; progress on stderr.
# Bounded: everything, clean-up included, ends within BUDGET seconds; what
# did not fit is left out and the result says "partial". Leaves nothing
# behind: every container it started, the containerd namespace and image it
# made, and its scratch folder are removed on every exit path.
set -eu

CTR_NAMESPACE=gvisor-fleet-overhead
NAME_PREFIX=gvisor-fleet-overhead-$$
# Work sizes inside the container: long enough to time at /proc/uptime's
# 10 ms resolution, short enough for an emulated machine.
SYSCALL_BYTES=${GVISOR_FLEET_OVERHEAD_SYSCALL_BYTES:-100000} # dd bs=1: two syscalls per byte
FILES=${GVISOR_FLEET_OVERHEAD_FILES:-300}
NET_BLOCKS=${GVISOR_FLEET_OVERHEAD_NET_BLOCKS:-256} # 64 KiB each, over loopback
NET_PORT=47011
IDLE_SETTLE=2

SCRIPT_NAME=overhead
# The budget (BUDGET, an argument) starts with the measure subcommand (budget_start).
STEP_TIMEOUT=0 STEP_START=$(date +%s)
