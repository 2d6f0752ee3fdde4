# shellcheck shell=sh
# Forming the cluster: init on the control plane, join on the workers, and
# what the control plane answers for the others (join tokens, readiness,
# drains, the kubeconfig).

# Its discovery cache in the script's own folder, not in root's home.
kubectl_admin() {
    timeout "$(remaining)" "$BIN_DIR/kubectl" --kubeconfig "$ADMIN_CONF" --cache-dir "$SCRATCH/kubectl-cache" "$@"
}

# kubeadm's own reason from its log: its error lines, else its last lines.
kubeadm_reason() {
    _reason=$(grep -E '^\[ERROR|^error|^[Ee]rror execution phase|timed out|context deadline' "$1" | tail -n 4 | tr '\n' ' ')
    [ -n "$_reason" ] || _reason=$(tail -n 4 "$1" | tr '\n' ' ')
    printf '%s' "$_reason"
}

# A failed init or join leaves nothing of itself: kubeadm's own reset.
undo_kubeadm() {
    timeout 300 "$BIN_DIR/kubeadm" reset -f --cri-socket "$CRI_SOCKET" >/dev/null 2>&1 || true
}

# CONFIG_B64 FILE
write_config() {
    umask 077
    printf '%s' "$1" | base64 -d > "$2"
}

# The control plane's static pods get the program's probe patch (kubeadm's
# patches directory, named in the init config), one copy per component.
write_probe_patches() {
    mkdir -p "$PATCHES_DIR"
    for component in etcd kube-apiserver kube-controller-manager kube-scheduler; do
        write_config "$1" "$PATCHES_DIR/$component+json.json"
    done
}

# NODE CONFIG_B64 TIMEOUT PATCH_B64
cmd_init() {
    budget_start $(($3 + 300))
    take_lock
    mkdir -p "$SCRATCH"
    if [ -s "$ADMIN_CONF" ] && kubectl_admin get --raw=/readyz >/dev/null 2>&1; then
        log "the control plane on $1 is up already"
        fact changed false
        return 0
    fi
    write_config "$2" "$STATE_DIR/init.yaml"
    write_probe_patches "$4"
    log "kubeadm init on $1 (bounded: ${3}s for the control plane to come up)"
    if ! timeout "$(remaining)" "$BIN_DIR/kubeadm" init --config "$STATE_DIR/init.yaml" > "$SCRATCH/init.log" 2>&1; then
        cat "$SCRATCH/init.log" >&2
        reason=$(kubeadm_reason "$SCRATCH/init.log")
        undo_kubeadm
        die "kubeadm init failed on $1: $reason (the machine is reset; 'journalctl -u kubelet' there tells more; the bound is gvisor-fleet:kubernetes.kubeadm.timeoutSeconds)"
    fi
    fact changed true
}

# NODE TIMEOUT, with JOIN_CONFIG (base64) set before the script on stdin: it
# carries the token, which a command line would show.
cmd_join() {
    [ -n "${JOIN_CONFIG:-}" ] || die "no join config came before the script on stdin (the program sends it)"
    budget_start $(($2 + 300))
    take_lock
    mkdir -p "$SCRATCH"
    if [ -s /etc/kubernetes/kubelet.conf ] && systemctl is-active --quiet kubelet; then
        log "$1 has joined already"
        fact changed false
        return 0
    fi
    write_config "$JOIN_CONFIG" "$STATE_DIR/join.yaml"
    log "kubeadm join of $1"
    if ! timeout "$(remaining)" "$BIN_DIR/kubeadm" join --config "$STATE_DIR/join.yaml" > "$SCRATCH/join.log" 2>&1; then
        cat "$SCRATCH/join.log" >&2
        reason=$(kubeadm_reason "$SCRATCH/join.log")
        undo_kubeadm
        rm -f "$STATE_DIR/join.yaml"
        die "kubeadm join of $1 failed: $reason (this machine is reset; the control plane is untouched; check that it reaches the control plane's address on port 6443)"
    fi
    rm -f "$STATE_DIR/join.yaml"
    fact changed true
}

# One try at a token for NODE: kubeadm's join line (secret) and its errors, in SCRATCH.
create_token() {
    (umask 077 && timeout "$(remaining)" "$BIN_DIR/kubeadm" token create --ttl 2h \
        --description "gvisor-fleet: join of $1" --print-join-command > "$SCRATCH/token.out" 2> "$SCRATCH/token.err")
}

# NODE TIMEOUT: a fresh bootstrap token for NODE to join with (stdout is secret).
cmd_join_token() {
    [ -s "$ADMIN_CONF" ] || die "$ADMIN_CONF is missing: is this the control plane, and did init run?"
    budget_start "$2"
    mkdir -p "$SCRATCH"
    # An API server still busy with its first minutes (or a slow machine) refuses for a while.
    if ! wait_for "a join token for $1" "$2" create_token "$1"; then
        reason=$(tail -n 2 "$SCRATCH/token.err" 2>/dev/null | tr '\n' ' ')
        rm -f "$SCRATCH/token.out" "$SCRATCH/token.err"
        die "kubeadm could not create a join token within ${2}s (gvisor-fleet:kubernetes.kubeadm.timeoutSeconds): $reason"
    fi
    line=$(cat "$SCRATCH/token.out")
    rm -f "$SCRATCH/token.out" "$SCRATCH/token.err"
    fact token "$(printf '%s\n' "$line" | sed -n 's/.*--token \([^ ]*\).*/\1/p')"
    fact ca_cert_hash "$(printf '%s\n' "$line" | sed -n 's/.*--discovery-token-ca-cert-hash \([^ ]*\).*/\1/p')"
    fact endpoint "$(printf '%s\n' "$line" | sed -n 's/^kubeadm join \([^ ]*\) .*/\1/p')"
}

# NODE TIMEOUT
cmd_wait_ready() {
    budget_start $(($2 + 60))
    wait_for "node $1 to register" "$2" kubectl_admin get node "$1" ||
        die "node $1 never registered with the API server; see 'journalctl -u kubelet' on it"
    if ! kubectl_admin wait --for=condition=Ready "node/$1" --timeout="$(remaining)s" >&2; then
        kubectl_admin describe node "$1" 2>/dev/null | sed -n '/^Conditions:/,/^Addresses:/p' >&2
        die "node $1 joined but is not Ready (its conditions are above)"
    fi
    fact "node_ready" "$1"
}

# NODE TIMEOUT: moves NODE's pods away and removes it from the cluster.
cmd_drain() {
    if [ ! -s "$ADMIN_CONF" ]; then
        log "no cluster here any more; nothing to drain"
        return 0
    fi
    budget_start $(($2 + 60))
    kubectl_admin drain "$1" --ignore-daemonsets --delete-emptydir-data --force --timeout="${2}s" >&2 ||
        log "draining $1 did not finish; removing it all the same"
    kubectl_admin delete node "$1" --ignore-not-found >&2
}

# The API server builds each form of its OpenAPI document on the first
# request for it, which a slow machine takes minutes over; the Kubernetes
# provider asks for the protobuf form first and gives up after 32 seconds.
# kubectl explain's OpenAPI v2 output asks for that form (gzipped, as the
# provider does), so it is ready for them.
openapi_warm() {
    kubectl_admin get --raw /openapi/v2 --request-timeout="$(remaining)s" >/dev/null 2>&1 || return 1
    kubectl_admin explain pods --output=plaintext-openapiv2 --request-timeout="$(remaining)s" >/dev/null 2>&1 ||
        log "kubectl explain could not read the OpenAPI document; the Kubernetes provider may take long on it"
}

# API_URL TIMEOUT: admin.conf for the program, pointing at API_URL (stdout is secret).
cmd_kubeconfig() {
    [ -s "$ADMIN_CONF" ] || die "$ADMIN_CONF is missing: is this the control plane, and did init run?"
    budget_start "$2"
    wait_for "the API server's OpenAPI document" "$2" openapi_warm ||
        die "the API server did not serve its OpenAPI document within ${2}s (gvisor-fleet:kubernetes.kubeadm.timeoutSeconds); see 'journalctl -u kubelet' and the kube-apiserver pod's log on the control plane"
    sed "s#^\( *server: \).*#\1$1#" "$ADMIN_CONF"
}
