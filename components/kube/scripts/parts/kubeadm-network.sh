# shellcheck shell=sh
# The pod network: a bridge per machine over its own /24 (the CNI reference
# plugins), and a route to each other machine's /24 through that machine.
# A oneshot service puts the routes and forwarding rules back after a reboot.

FORWARD_COMMENT=gvisor-fleet-pods

# POD_CIDR: the CNI config of this machine's pods.
cni_conflist() {
    cat <<JSON
{
  "cniVersion": "1.0.0",
  "name": "gvisor-fleet",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "cni0",
      "isGateway": true,
      "ipMasq": true,
      "hairpinMode": true,
      "ipam": {"type": "host-local", "ranges": [[{"subnet": "$1"}]], "routes": [{"dst": "0.0.0.0/0"}]}
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
JSON
}

# POD_SUBNET CIDR=IP...: the service that sets the routes and lets pod traffic
# through FORWARD (Docker's policy there is DROP).
network_unit() {
    subnet=$1
    shift
    printf '[Unit]\nDescription=gvisor-fleet: routes to the pods of the other nodes\n'
    printf 'After=network-online.target docker.service\nWants=network-online.target\n\n'
    printf '[Service]\nType=oneshot\nRemainAfterExit=yes\n'
    for route in "$@"; do
        printf 'ExecStart=/sbin/ip route replace %s via %s\n' "${route%%=*}" "${route#*=}"
    done
    for dir in -s -d; do
        rule="FORWARD $dir $subnet -m comment --comment $FORWARD_COMMENT -j ACCEPT"
        printf "ExecStart=/bin/sh -c 'iptables -C %s 2>/dev/null || iptables -I %s'\n" "$rule" "$rule"
    done
    printf '\n[Install]\nWantedBy=multi-user.target\n'
}

# POD_CIDR POD_SUBNET CIDR=IP...
cmd_network() {
    take_lock
    mkdir -p "$SCRATCH" "$(dirname "$CNI_CONF")"
    [ -f "$STATE_DIR/installed" ] || die "run the install step first"
    pod_cidr=$1
    shift
    c1=$(cni_conflist "$pod_cidr" | write_if_changed "$CNI_CONF")
    c2=$(network_unit "$@" | write_if_changed "$NETWORK_UNIT")
    timeout "$(remaining)" systemctl daemon-reload
    timeout "$(remaining)" systemctl enable gvisor-fleet-pod-network.service >/dev/null 2>&1
    action=start
    [ "$c2" = false ] || action=restart
    if ! timeout "$(remaining)" systemctl "$action" gvisor-fleet-pod-network.service; then
        die "the routes to the other nodes' pods failed ($(journalctl -u gvisor-fleet-pod-network -n 3 --no-pager -o cat 2>/dev/null | tr '\n' ' ')); the machines must share a network: check their addresses (privateAddress, lanAddress)"
    fi
    fact pod_cidr "$pod_cidr"
    if [ "$c1$c2" = falsefalse ]; then fact changed false; else fact changed true; fi
}

# Undoes what the network step and the pods left: routes, rules, chains, the bridge.
network_reset() {
    if [ -f "$NETWORK_UNIT" ]; then
        systemctl disable --now gvisor-fleet-pod-network.service >/dev/null 2>&1 || true
        sed -n 's|^ExecStart=/sbin/ip route replace \([^ ]*\) via .*|\1|p' "$NETWORK_UNIT" | while read -r cidr; do
            ip route del "$cidr" 2>/dev/null || true
        done
    fi
    for tool in iptables ip6tables; do
        have "$tool" || continue
        "$tool" -S FORWARD 2>/dev/null | grep -- "--comment $FORWARD_COMMENT" | sed 's/^-A /-D /' |
            while read -r rule; do
                # shellcheck disable=SC2086 # one word per argument, as iptables -S printed them
                "$tool" $rule 2>/dev/null || true
            done
        drop_kube_chains "$tool"
    done
    if [ "$(cat "$STATE_DIR/cni0.before" 2>/dev/null)" = no ]; then ip link del cni0 2>/dev/null || true; fi
}

# The chains kube-proxy, the kubelet and the CNI plugins made (KUBE-*, CNI-*):
# the jumps to them first, then their rules, then the chains.
drop_kube_chains() {
    for table in filter nat mangle; do
        # Deleted by number, last first: the CNI plugins' rules carry comments
        # with quoted spaces, which a rule read back as words would split.
        for from in $("$1" -t "$table" -S 2>/dev/null | sed -n 's/^-[PN] \([^ ]*\).*/\1/p'); do
            "$1" -t "$table" -L "$from" -n --line-numbers 2>/dev/null |
                awk 'NR > 2 && $2 ~ /^(KUBE|CNI)-/ { print $1 }' | sort -rn | while read -r number; do
                    "$1" -t "$table" -D "$from" "$number" 2>/dev/null || true
                done
        done
        chains=$("$1" -t "$table" -S 2>/dev/null | sed -n 's/^-N \(\(KUBE\|CNI\)-[^ ]*\)$/\1/p')
        for chain in $chains; do "$1" -t "$table" -F "$chain" 2>/dev/null || true; done
        for chain in $chains; do "$1" -t "$table" -X "$chain" 2>/dev/null || true; done
    done
    if have nft; then nft delete table ip kube-proxy 2>/dev/null || true; nft delete table ip6 kube-proxy 2>/dev/null || true; fi
}
