# shellcheck shell=sh disable=SC2034 # the constants are read by later parts
# Node installer: the entry of the node installer's pods (components/kube/
# node_installer.py), from the ConfigMap that also holds the host agent:
#   sh node-installer.sh install   (the installer DaemonSet)
#   sh node-installer.sh cleanup   (the cleanup DaemonSet: waits, and puts the
#                                   node back when its DaemonSet is deleted)
# It copies the agent to the node after checking its hash, runs the agent's
# steps in the node's own namespaces (the lines in steps-<arch>, the SSH
# path's arguments), and only after verify passed labels its node. The pod's
# environment names the node, the labels and annotations (see the manifest).
set -eu

SCRIPT_NAME=node-installer
CONFIG_DIR=${INSTALLER_CONFIG_DIR:-/etc/gvisor-fleet}
AGENT="$CONFIG_DIR/gvisor-host.sh"
# The node's folder for the agent's copy (volatile: a reboot clears it), and
# where the pod sees it (a hostPath volume). The INSTALLER_* overrides are
# for tests that run this script outside a pod.
NODE_DIR=${INSTALLER_NODE_DIR:-/run/gvisor-fleet/installer}
POD_DIR=${INSTALLER_POD_DIR:-/node-run}
# Present only while the node is verified: the pod's readiness probe reads it,
# so a rollout stops at a node that fails.
READY_FILE=${INSTALLER_READY_FILE:-/tmp/gvisor-fleet-verified}
# Present on a node whose services systemd runs.
SYSTEMD_DIR=${INSTALLER_SYSTEMD_DIR:-/run/systemd/system}
# The API server may take a while to answer a node that just joined.
STEP_TIMEOUT=120
STEP_START=$(date +%s)
