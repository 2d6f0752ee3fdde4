# shellcheck shell=sh disable=SC2034 # the constants are read by later parts
# k3s node agent: sent on stdin by the KubeDeployment component and run as
#   sh -s -- <subcommand> [args...]
# Installs k3s (server or agent) from a pinned, checksummed release, gives
# k3s's own containerd the gVisor runtime through its config template, and
# reads back what the program needs (token, kubeconfig). Every subcommand is
# idempotent. Facts go to stdout as key=value lines; progress and errors go to
# stderr. GVISOR_FLEET_ROOT (tests only) prefixes every path the script touches.
set -eu

SCRIPT_NAME=k3s-node
DOWNLOADS=k3s
ROOT=${GVISOR_FLEET_ROOT:-}
BIN_DIR="$ROOT/usr/local/bin"
CONFIG_DIR="$ROOT/etc/rancher/k3s"
CONFIG_YAML="$CONFIG_DIR/config.yaml"
DATA_DIR="$ROOT/var/lib/rancher/k3s"
CONTAINERD_DIR="$DATA_DIR/agent/etc/containerd"
STATE_DIR="$ROOT/var/lib/gvisor-fleet/k3s"
BASE_LINE='{{ template "base" . }}'
READY_TRIES=${GVISOR_FLEET_READY_TRIES:-180}
# The whole step is bounded: a k3s download over a slow link and two
# readiness waits (READY_TRIES each) fit; a hung mirror does not hang `pulumi up`.
STEP_TIMEOUT=${GVISOR_FLEET_STEP_TIMEOUT:-1800}
STEP_START=$(date +%s)
BUDGET_SETTING=""
RELEASE_SETTING=gvisor-fleet:kubernetes.k3s.releaseUrl
SCRIPT_SETTING=gvisor-fleet:kubernetes.k3s.installScriptUrl
