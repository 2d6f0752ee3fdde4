#!/bin/sh
# Multipass launcher for the multipass backend (run by a pulumi_command
# local.Command). POSIX sh.
#
#   multipass-vm.sh start NAME IMAGE CPUS MEMORY_MIB DISK TIMEOUT_S HOST_KEY   < user-data
#   multipass-vm.sh stop NAME
#
# start is idempotent (an existing instance is started if stopped, not
# relaunched); the seed goes to `multipass launch --cloud-init -` on stdin, so
# no file has to be readable by the multipass daemon. Facts (address=...) go
# to stdout; the address is the instance's first IPv4 address.
set -eu

log() { printf 'multipass-vm: %s\n' "$*" >&2; }
die() { printf 'multipass-vm: ERROR: %s\n' "$*" >&2; exit 1; }
fact() { printf '%s=%s\n' "$1" "$2"; }

command -v multipass >/dev/null 2>&1 ||
    die "multipass is not installed on this machine (https://multipass.run); or use backend: qemu"

state() {
    multipass info "$1" --format csv 2>/dev/null | awk -F, 'NR == 2 { print $2 }'
}

address() {
    multipass info "$1" --format csv 2>/dev/null | awk -F, 'NR == 2 { print $3 }'
}

offered_key() {
    ssh-keyscan -T 5 -t ed25519 "$1" 2>/dev/null | awk '$2 == "ssh-ed25519" { print $2 " " $3; exit }'
}

cmd_start() {
    [ $# -eq 7 ] || die "usage: multipass-vm.sh start NAME IMAGE CPUS MEMORY_MIB DISK TIMEOUT_S HOST_KEY"
    name=$1 image=$2 cpus=$3 memory=$4 disk=$5 timeout=$6 host_key=$7
    started=$(date +%s)
    current=$(state "$name")
    if [ -z "$current" ]; then
        log "launching $name ($image)"
        multipass launch --name "$name" --cpus "$cpus" --memory "${memory}M" --disk "$disk" \
            --timeout "$timeout" --cloud-init - "$image" >&2 ||
            die "multipass launch of $name failed (see above)"
    else
        cat > /dev/null # launched before: cloud-init seeds only a new instance
        [ "$current" = Running ] || multipass start "$name" >&2 || die "cannot start multipass instance $name"
    fi
    ip=$(address "$name")
    [ -n "$ip" ] || die "multipass instance $name has no IPv4 address"
    want=$(printf '%s\n' "$host_key" | awk '{ print $1 " " $2 }')
    while :; do
        got=$(offered_key "$ip")
        if [ -n "$got" ]; then
            [ "$got" = "$want" ] || die "SSH on $ip offers host key '$got', not $name's pinned key"
            break
        fi
        [ $(($(date +%s) - started)) -lt "$timeout" ] ||
            die "multipass instance $name: no SSH on $ip:22 within ${timeout}s"
        sleep 2
    done
    fact name "$name"
    fact address "$ip"
    # Unique per instance: a relaunched machine gets a new one.
    fact instance "$(multipass exec "$name" -- cat /etc/machine-id 2>/dev/null || echo unknown)"
}

cmd_stop() {
    [ $# -eq 1 ] || die "usage: multipass-vm.sh stop NAME"
    if [ -n "$(state "$1")" ]; then
        multipass delete --purge "$1" >&2
        log "deleted multipass instance $1"
    fi
    fact stopped "$1"
}

[ $# -ge 1 ] || die "usage: multipass-vm.sh start|stop ..."
action=$1
shift
case $action in
    start) cmd_start "$@" ;;
    stop) cmd_stop "$@" ;;
    *) die "unknown action '$action' (start, stop)" ;;
esac
