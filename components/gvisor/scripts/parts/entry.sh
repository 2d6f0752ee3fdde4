# shellcheck shell=sh
# The entry: options, the copy's own check, and one subcommand.

usage() {
    die "usage: sh FILE [-tSECONDS] [-iINSTANCE] [-rRELEASE] preflight ARCH PLATFORM DOCKER CONTAINERD [SUBCOMMAND ARGS] | install | install-file | uninstall DIR [remove-copy] | docker-configure | docker-restore | containerd-plan | containerd-configure | containerd-restore | verify ARGS | check PREFIX RUNTIME RUNSC_TOML"
}

# A copy named by its hash (agent.py) refuses to run once it differs from it.
check_copy() {
    case ${0##*/} in
        gvisor-host-*) ;;
        *) return 0 ;;
    esac
    case $(sha256sum < "$0") in
        "${0##*-}"*) ;;
        *) die "$PWD/$0 is altered: its SHA-256 does not start with the hash in its name; copy it again: pulumi up --replace <URN of this machine's '-agent' copy> (pulumi stack --show-urns)" ;;
    esac
}

# Every copy of the script in its folder, then the folder if nothing else is
# in it: what the install step's delete leaves, last on destroy.
remove_copy() {
    case ${0##*/} in
        gvisor-host-*)
            rm -f "${0%/*}"/gvisor-host-*
            rmdir "${0%/*}" 2>/dev/null || true
            ;;
    esac
}

# One subcommand; preflight and uninstall may be followed by another, which
# runs only after them (the install step: checks, then install; its delete:
# uninstall, then remove-copy).
dispatch() {
    [ $# -ge 1 ] || usage
    sub=$1
    shift
    case $sub in
        preflight)
            [ $# -ge 4 ] || usage
            cmd_preflight "$1" "$2" "$3" "$4"
            shift 4
            [ $# -eq 0 ] || dispatch "$@"
            ;;
        uninstall)
            [ $# -ge 1 ] || usage
            cmd_uninstall "$1"
            shift
            [ $# -eq 0 ] || dispatch "$@"
            ;;
        remove-copy) remove_copy ;;
        install) cmd_install "$@" ;;
        install-file) cmd_install_file "$@" ;;
        docker-configure) cmd_docker_configure "$@" ;;
        docker-restore) cmd_docker_restore "$@" ;;
        containerd-plan) cmd_containerd_plan "$@" ;;
        containerd-configure) cmd_containerd_configure "$@" ;;
        containerd-restore) cmd_containerd_restore "$@" ;;
        verify) cmd_verify "$@" ;;
        check) cmd_check "$@" ;;
        *) usage ;;
    esac
}

# -i names the machine's generation on the command line only (a new machine
# runs the step again), -r the release the stack asked for (latest) when the
# line names what it resolved to; the script has no use for either.
while :; do
    case ${1-} in
        -t*) STEP_TIMEOUT=${1#-t} ;;
        -i* | -r*) ;;
        *) break ;;
    esac
    shift
done
case $STEP_TIMEOUT in
    "" | *[!0-9]*) die "step timeout '$STEP_TIMEOUT' is not a number of seconds (gvisor-fleet:stepTimeout)" ;;
esac
check_copy
dispatch "$@"
