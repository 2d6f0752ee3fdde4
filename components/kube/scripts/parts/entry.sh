# shellcheck shell=sh
# Reading back what the program needs, and the entry: one subcommand.

cmd_token() {
    f="$DATA_DIR/server/node-token"
    [ -s "$f" ] || die "$f is missing: is this machine the k3s server?"
    cat "$f"
}

cmd_kubeconfig() {
    api_url=$1
    f="$CONFIG_DIR/k3s.yaml"
    [ -s "$f" ] || die "$f is missing: is this machine the k3s server?"
    sed "s#server: https://127.0.0.1:6443#server: $api_url#" "$f"
}

# Waits until every named node has registered and is Ready.
cmd_wait_nodes() {
    for node in "$@"; do
        wait_for "node $node to register" "$READY_TRIES" "$BIN_DIR/k3s" kubectl get node "$node" ||
            die "node $node never joined the cluster; see 'journalctl -u k3s-agent' on it"
        timeout "$(remaining)" "$BIN_DIR/k3s" kubectl wait --for=condition=Ready "node/$node" --timeout="${READY_TRIES}s" >&2 ||
            die "node $node joined but is not Ready"
        fact "node_ready_$node" true
    done
}

usage() {
    die "usage: sh -s -- install|uninstall|runtime-configure|runtime-restore|token|kubeconfig|wait-nodes ARGS"
}

[ $# -ge 1 ] || usage
sub=$1
shift
case $sub in
    install) cmd_install "$@" ;;
    uninstall) cmd_uninstall "$@" ;;
    runtime-configure) cmd_runtime_configure "$@" ;;
    runtime-restore) cmd_runtime_restore "$@" ;;
    token) cmd_token "$@" ;;
    kubeconfig) cmd_kubeconfig "$@" ;;
    wait-nodes) cmd_wait_nodes "$@" ;;
    *) usage ;;
esac
