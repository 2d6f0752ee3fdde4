# shellcheck shell=sh disable=SC2034 # the constants are read by later parts
# kubeadm node agent: sent on stdin by the KubeadmCluster component and run as
#   sh -s -- <subcommand> [args...]
# Installs kubeadm, the kubelet, kubectl and the CNI plugins from a pinned,
# checksummed release (downloaded, or copied from releaseDir), forms the
# cluster (init on the control plane, join on the workers) on the containerd
# the host layer configured, and resets a machine to exactly what it was.
# Every path it or kubeadm writes is backed up first (the journal) and put
# back byte for byte by `reset`. Facts go to stdout as key=value lines;
# progress and errors go to stderr.
set -eu

SCRIPT_NAME=kubeadm-node
DOWNLOADS=Kubernetes
BIN_DIR=/usr/local/bin
CNI_BIN=/opt/cni/bin # where the plugins go unless containerd names another folder
CNI_CONF=/etc/cni/net.d/10-gvisor-fleet.conflist
UNIT_DIR=/etc/systemd/system
KUBELET_UNIT=$UNIT_DIR/kubelet.service
KUBELET_DROPIN=$UNIT_DIR/kubelet.service.d
NETWORK_UNIT=$UNIT_DIR/gvisor-fleet-pod-network.service
SYSCTL_FILE=/etc/sysctl.d/90-gvisor-fleet-kubernetes.conf
MODULES_FILE=/etc/modules-load.d/gvisor-fleet-kubernetes.conf
ADMIN_CONF=/etc/kubernetes/admin.conf
CRI_SOCKET=unix:///run/containerd/containerd.sock
STATE_DIR=/var/lib/gvisor-fleet/kubeadm
BACKUP_DIR=$STATE_DIR/backup
SCRATCH=$STATE_DIR/scratch
PATCHES_DIR=$STATE_DIR/patches # components/kube/kubeadm.py's PATCHES_DIR
LOCK=/run/gvisor-fleet/kubeadm.lock
JOIN_CONFIG=${JOIN_CONFIG:-} # the join step's config, set on stdin before the script (cmd_join)
BUNDLE=release.tar.gz # components/kube/kubeadm.py's BUNDLE: releaseDir's copy, one archive
# What this script and kubeadm write: each is backed up before the first
# write and restored by reset (a folder whole, as it was, or removed).
TOUCHED="$BIN_DIR/kubeadm $BIN_DIR/kubelet $BIN_DIR/kubectl /opt/cni /etc/cni /var/lib/cni /etc/kubernetes
/var/lib/kubelet /var/lib/etcd $KUBELET_UNIT $KUBELET_DROPIN $NETWORK_UNIT $SYSCTL_FILE $MODULES_FILE"
# kubeadm's own floor for a control plane (its Mem preflight check).
CONTROL_PLANE_MIN_MEMORY_MB=1700
STEP_TIMEOUT=${GVISOR_FLEET_STEP_TIMEOUT:-1800}
STEP_START=$(date +%s)
BUDGET_SETTING=gvisor-fleet:kubernetes.kubeadm.timeoutSeconds
RELEASE_SETTING="gvisor-fleet:kubernetes.kubeadm.releaseUrl (or releaseDir)"
