# shellcheck shell=sh disable=SC2034 # the constants are read by later parts
# gVisor host agent: copied once to each machine by the GvisorHost component
# (named by its hash, see components/gvisor/agent.py) and run by each step as
#   sh <this file> [-tSTEP_TIMEOUT] [-iINSTANCE] <subcommand> [args...]
# (`sh -s -- <subcommand> ...` with the script on stdin works the same way).
# Every subcommand is idempotent. Facts go to stdout as key=value lines (the
# component parses them); progress and errors go to stderr. Nothing is changed
# on the host until every check that can run first has passed.
set -eu

SCRIPT_NAME=gvisor-host
DOWNLOADS=gVisor
STATE_DIR=${GVISOR_FLEET_STATE_DIR:-/var/lib/gvisor-fleet}
BACKUP_DIR="$STATE_DIR/backup"
DAEMON_JSON=${GVISOR_FLEET_DAEMON_JSON:-/etc/docker/daemon.json}
CONTAINERD_CONFIG=${GVISOR_FLEET_CONTAINERD_CONFIG:-/etc/containerd/config.toml}
CTR_NAMESPACE=gvisor-fleet
# A sandbox that never starts must fail the step, not hang `pulumi up`.
VERIFY_TIMEOUT=${GVISOR_FLEET_VERIFY_TIMEOUT:-300}
# The whole step is bounded (gvisor-fleet:stepTimeout): the lock wait, every
# download, every service restart and check take from the same budget.
STEP_TIMEOUT=${GVISOR_FLEET_STEP_TIMEOUT:-900}
STEP_START=$(date +%s)
BUDGET_SETTING=gvisor-fleet:stepTimeout
# One step at a time per host (see take_lock); volatile, so a reboot clears it.
LOCK=${GVISOR_FLEET_LOCK:-/run/lock/gvisor-fleet.lock}
# Scratch space of the running step: beside the state, so a killed step's
# leftovers are found and removed by the next one.
SCRATCH="$STATE_DIR/tmp"
# Where the release is fetched from, and what else a host that cannot reach it can do.
RELEASE_SETTING=gvisor-fleet:baseUrl
OFFLINE_FIX="or set gvisor-fleet:releaseFetch to once so hosts need no internet"
# Says the files in installDir are ours (see write_install_state).
INSTALL_STATE="$STATE_DIR/install.state"
