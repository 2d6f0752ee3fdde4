# shellcheck shell=sh
# The entry: one subcommand.

usage() {
    die "usage: sh -s -- install|network|init|join-token|join|wait-ready|drain|kubeconfig|reset ARGS"
}

[ $# -ge 1 ] || usage
sub=$1
shift
case $sub in
    install) cmd_install "$@" ;;
    network) cmd_network "$@" ;;
    init) cmd_init "$@" ;;
    join-token) cmd_join_token "$@" ;;
    join) cmd_join "$@" ;;
    wait-ready) cmd_wait_ready "$@" ;;
    drain) cmd_drain "$@" ;;
    kubeconfig) cmd_kubeconfig "$@" ;;
    reset) cmd_reset "$@" ;;
    *) usage ;;
esac
