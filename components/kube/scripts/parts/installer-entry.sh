# shellcheck shell=sh
# The entry: one subcommand, then the pod sleeps (a DaemonSet's pod must stay).

case ${1-} in
    install)
        cmd_install
        wait_for_stop true
        ;;
    cleanup) wait_for_stop cmd_cleanup ;;
    *) die "usage: sh node-installer.sh install | cleanup" ;;
esac
