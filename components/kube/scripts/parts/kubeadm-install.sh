# shellcheck shell=sh
# The install step: binaries, the kubelet's service, kernel settings and
# (from releaseDir) images; its undoing is `reset`.

# Where containerd's CRI looks for CNI plugins: the first of its cni section's
# bin_dirs (bin_dir before containerd 2), else CNI_BIN. Debian's containerd
# package, for one, names /usr/lib/cni.
containerd_cni_dir() {
    containerd config dump 2>/dev/null | awk -v q="'" '
        /^ *\[/ { in_cni = ($0 ~ /\.cni\] *$/) }
        in_cni && /^ *bin_dirs? *=/ && match($0, "[\"" q "][^\"" q "]+[\"" q "]") {
            print substr($0, RSTART + 1, RLENGTH - 2); found = 1; exit
        }
        END { if (!found) exit 1 }' || echo "$CNI_BIN"
}

# What reset needs to put the machine back, noted once, before the first write.
record_before() {
    [ ! -f "$STATE_DIR/installed" ] || return 0
    mkdir -p "$BACKUP_DIR"
    containerd_cni_dir > "$STATE_DIR/cni_bin"
    for path in $TOUCHED $(cat "$STATE_DIR/cni_bin"); do backup_once "$path" verbatim; done
    cat /proc/sys/net/ipv4/ip_forward > "$STATE_DIR/ip_forward.before"
    if [ -d /sys/module/br_netfilter ]; then echo yes; else echo no; fi > "$STATE_DIR/br_netfilter.before"
    if ip link show cni0 >/dev/null 2>&1; then echo yes; else echo no; fi > "$STATE_DIR/cni0.before"
    ctr -n k8s.io images ls -q 2>/dev/null | sort > "$STATE_DIR/images.before" || : > "$STATE_DIR/images.before"
    : > "$STATE_DIR/installed"
}

# The published checksum beside URL (first word of URL.sha512).
published_sha512() {
    fetch "$1.sha512" "$2.sha512" "$RELEASE_SETTING" ||
        die "$1.sha512 is not there (HTTP 404): check gvisor-fleet:kubernetes.kubeadm.version and cniVersion"
    cut -d' ' -f1 < "$2.sha512"
}

# URL DEST: downloads and checks one file against its published SHA-512.
fetch_checked() {
    want=$(published_sha512 "$1" "$2")
    fetch "$1" "$2" "$RELEASE_SETTING" || die "$1 is not there (HTTP 404): check gvisor-fleet:kubernetes.kubeadm.version"
    [ "$(sha512_of "$2")" = "$want" ] || die "$1 does not match its published SHA-512; the download or the mirror is corrupt"
}

# SHA512SUMS on stdin, each file once: names that are hard links to one file
# (the copy's kubeadm, kubelet, kubectl: one multi-call binary) are hashed
# once, an emulated machine's longest wait in install. A name listed with
# another digest than its file's first name stays, so the check fails on it.
sums_once() {
    _line=0
    while read -r _sum _name; do
        _name=${_name#\*} _line=$((_line + 1))
        printf '%s %s %s\n' "$(stat -c %d:%i -- "$_name" 2>/dev/null || echo "missing:$_line")" "$_sum" "$_name"
    done | awk '{
        name = $0; sub(/^[^ ]+ [^ ]+ /, "", name)
        if (!($1 in seen) || seen[$1] != $2) print $2 "  " name
        if (!($1 in seen)) seen[$1] = $2
    }'
}

# KIND WHERE TMP: checks every file of the release and prints the folder
# holding them: TMP for downloads, the copy itself for releaseDir (already
# on this machine's disk once; a second copy may not fit a small one).
gather_release() {
    case $1 in
        url)
            kube=${2%%|*} cni=${2#*|}
            for name in kubeadm kubelet kubectl; do fetch_checked "$kube/$name" "$3/$name"; done
            fetch_checked "$cni" "$3/cni-plugins.tgz"
            echo "$3"
            ;;
        dir)
            # The program copies the folder as one archive (each distinct file once).
            if [ -f "$2/$BUNDLE" ]; then
                tar -C "$2" --no-same-owner -xzf "$2/$BUNDLE" ||
                    die "the copy of gvisor-fleet:kubernetes.kubeadm.releaseDir in $2/$BUNDLE does not unpack; run up again to copy it again"
                rm -f "$2/$BUNDLE"
            fi
            [ -f "$2/SHA512SUMS" ] || die "$2/SHA512SUMS is missing: the copy of gvisor-fleet:kubernetes.kubeadm.releaseDir is incomplete"
            (cd "$2" && sums_once < SHA512SUMS | sha512sum -c --quiet - >&2) ||
                die "the copy of gvisor-fleet:kubernetes.kubeadm.releaseDir in $2 does not match its SHA512SUMS; make it again"
            echo "$2"
            ;;
        *) die "unknown release source '$1'" ;;
    esac
}

# Writes FILE from stdin when it differs; prints true when it changed.
write_if_changed() {
    cat > "$SCRATCH/new"
    if cmp -s "$SCRATCH/new" "$1"; then echo false; return 0; fi
    replace_file "$SCRATCH/new" "$1"
    echo true
}

kubelet_unit() {
    cat <<UNIT
[Unit]
Description=kubelet: the Kubernetes node agent (gvisor-fleet, kubeadm)
Wants=network-online.target containerd.service
After=network-online.target containerd.service

[Service]
ExecStart=$BIN_DIR/kubelet
Restart=always
RestartSec=10

[Install]
WantedBy=multi-user.target
UNIT
}

# kubeadm writes the flags and config this drop-in reads.
kubelet_dropin() {
    cat <<UNIT
[Service]
Environment="KUBELET_KUBECONFIG_ARGS=--bootstrap-kubeconfig=/etc/kubernetes/bootstrap-kubelet.conf --kubeconfig=/etc/kubernetes/kubelet.conf"
Environment="KUBELET_CONFIG_ARGS=--config=/var/lib/kubelet/config.yaml"
EnvironmentFile=-/var/lib/kubelet/kubeadm-flags.env
ExecStart=
ExecStart=$BIN_DIR/kubelet \$KUBELET_KUBECONFIG_ARGS \$KUBELET_CONFIG_ARGS \$KUBELET_KUBEADM_ARGS
UNIT
}

# The machine's address on the fleet's network: the one given, else the source of its default route.
node_address() {
    if [ "$1" != - ]; then echo "$1"; return 0; fi
    _addr=$(ip -4 route get 1.1.1.1 2>/dev/null | sed -n 's/.* src \([0-9.]*\).*/\1/p')
    [ -n "$_addr" ] || die "this machine has no default route to take its address from; set privateAddress on it"
    echo "$_addr"
}

# ROLE VERSION KIND WHERE ADDRESS
cmd_install() {
    role=$1 version=$2
    preflight "$role"
    # Before any change: a machine with no address to give is refused as it is.
    node_ip=$(node_address "$5")
    take_lock
    mkdir -p "$SCRATCH"
    record_before
    checkpoint install:recorded
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    changed=false
    if [ "$(cat "$STATE_DIR/version" 2>/dev/null)" != "$version $3 $4" ]; then
        src=$(gather_release "$3" "$4" "$tmp")
        for name in kubeadm kubelet kubectl; do
            replace_file "$src/$name" "$BIN_DIR/$name"
            chmod 0755 "$BIN_DIR/$name"
        done
        checkpoint install:binaries
        plugin_dir=$(cat "$STATE_DIR/cni_bin")
        mkdir -p "$plugin_dir"
        tar -C "$plugin_dir" --no-same-owner -xzf "$src/cni-plugins.tgz"
        checkpoint install:cni
        [ "$3" != dir ] || import_images "$4"
        checkpoint install:images
        echo "$version $3 $4" > "$STATE_DIR/version"
        changed=true
    fi
    mkdir -p "$KUBELET_DROPIN"
    c1=$(kubelet_unit | write_if_changed "$KUBELET_UNIT")
    c2=$(kubelet_dropin | write_if_changed "$KUBELET_DROPIN/10-kubeadm.conf")
    checkpoint install:units
    printf 'overlay\nbr_netfilter\n' | write_if_changed "$MODULES_FILE" >/dev/null
    printf 'net.ipv4.ip_forward = 1\nnet.bridge.bridge-nf-call-iptables = 1\n' | write_if_changed "$SYSCTL_FILE" >/dev/null
    modprobe br_netfilter 2>/dev/null || log "could not load br_netfilter; bridged pod traffic skips iptables"
    sysctl -q -p "$SYSCTL_FILE" >&2 || sysctl -q -w net.ipv4.ip_forward=1 >&2
    if [ "$c1$c2" != falsefalse ]; then changed=true; fi
    timeout "$(remaining)" systemctl daemon-reload
    timeout "$(remaining)" systemctl enable kubelet >/dev/null 2>&1
    fact changed "$changed"
    fact node_ip "$node_ip"
    fact kubernetes_version "$("$BIN_DIR/kubeadm" version -o short)"
    fact kubeadm_role "$role"
}

# DIR: the images releaseDir holds for this arch, into the kubelet's namespace.
import_images() {
    for image in "$1"/images/*.tar; do
        [ -f "$image" ] || continue
        timeout "$(remaining)" ctr -n k8s.io images import "$image" >&2 ||
            die "containerd could not import $image from gvisor-fleet:kubernetes.kubeadm.releaseDir"
    done
}
