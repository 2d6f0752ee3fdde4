# shellcheck shell=sh
# reset: the machine as it was before install, byte for byte where this
# program or kubeadm wrote, after kubeadm's own reset.

cmd_reset() {
    if [ ! -f "$STATE_DIR/installed" ]; then
        log "nothing of gvisor-fleet's kubeadm here"
        return 0
    fi
    take_lock
    if [ -x "$BIN_DIR/kubeadm" ] && [ -d /etc/kubernetes ]; then
        timeout "$(remaining)" "$BIN_DIR/kubeadm" reset -f --cri-socket "$CRI_SOCKET" >&2 ||
            log "kubeadm reset failed; cleaning up all the same"
    fi
    systemctl disable --now kubelet >/dev/null 2>&1 || true
    network_reset
    checkpoint reset:network
    drop_new_images
    checkpoint reset:images
    for path in $TOUCHED $(cat "$STATE_DIR/cni_bin" 2>/dev/null); do
        if has_backup "$path"; then restore_backup "$path"; fi
        checkpoint "reset:restored:$path"
    done
    sysctl -q -w "net.ipv4.ip_forward=$(cat "$STATE_DIR/ip_forward.before")" >&2 || true
    if [ "$(cat "$STATE_DIR/br_netfilter.before")" = no ]; then modprobe -r br_netfilter 2>/dev/null || true; fi
    systemctl daemon-reload
    release_lock
    rm -rf "$STATE_DIR"
    # The shared folders go too when nothing else of this program is in them.
    rmdir /var/lib/gvisor-fleet "${LOCK%/*}" 2>/dev/null || true
    fact reset true
}

# The images containerd holds for the kubelet now and did not before install.
drop_new_images() {
    ctr -n k8s.io images ls -q 2>/dev/null | sort | comm -23 - "$STATE_DIR/images.before" | while read -r image; do
        ctr -n k8s.io images rm "$image" >/dev/null 2>&1 || true
    done
}
