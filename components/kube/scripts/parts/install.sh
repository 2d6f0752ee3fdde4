# shellcheck shell=sh
# The install step: k3s from a pinned, checksummed release, and its removal.

service_name() {
    if [ "$1" = server ]; then echo k3s; else echo k3s-agent; fi
}

# The service manager k3s's install script writes a service for: systemd
# wherever systemctl is, else OpenRC.
k3s_manager() {
    if have systemctl; then
        echo systemd
    elif have rc-service; then
        echo openrc
    else
        return 1
    fi
}

installed_role() {
    [ -f "$STATE_DIR/install.state" ] || return 0
    sed -n 's/^role=//p' "$STATE_DIR/install.state"
}

k3s_arch() {
    case $(uname -m) in
        x86_64) echo amd64 ;;
        aarch64) echo arm64 ;;
        *) die "unsupported architecture '$(uname -m)'; k3s with gVisor needs x86_64 or aarch64" ;;
    esac
}

sha256_of() { sha256sum "$1" | cut -d' ' -f1; }

# ROLE NODE SERVER_URL TLS_SAN TOKEN OUT
write_k3s_config() {
    {
        echo "# Written by gvisor-fleet; the next 'pulumi up' replaces manual edits."
        echo "node-name: \"$2\""
        if [ "$1" = server ]; then
            echo "write-kubeconfig-mode: \"0600\""
            [ "$4" = - ] || echo "tls-san: [\"$4\"]"
        else
            echo "server: \"$3\""
            echo "token: \"$5\""
        fi
    } > "$6"
}

# ROLE VERSION RELEASE_URL SCRIPT_URL PINNED_SHA NODE SERVER_URL TLS_SAN [TOKEN]
cmd_install() {
    role=$1 version=$2 url="$3/$2" script_url=$4 node=$6
    token=${9:--}
    check_install "$role" "$token"
    arch=$(k3s_arch)
    mkdir -p "$STATE_DIR" "$CONFIG_DIR" "$BIN_DIR"
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    if [ "$arch" = amd64 ]; then asset=k3s; else asset="k3s-$arch"; fi
    published=$(published_sha "$url" "$arch" "$asset" "$5" "$tmp")
    changed=$(install_binary "$url" "$asset" "$published" "$tmp")
    write_k3s_config "$role" "$node" "$7" "$8" "$token" "$tmp/config.yaml"
    if ! cmp -s "$tmp/config.yaml" "$CONFIG_YAML"; then
        chmod 0600 "$tmp/config.yaml"
        replace_file "$tmp/config.yaml" "$CONFIG_YAML"
        chmod 0600 "$CONFIG_YAML"
        changed=true
    fi
    printf 'role=%s\nversion=%s\nnode=%s\n' "$role" "$version" "$node" > "$STATE_DIR/install.state"
    svc=$(service_name "$role")
    if [ "$changed" = true ] || ! service_active "$svc" "$(k3s_manager)"; then
        start_k3s "$role" "$script_url" "$tmp"
    fi
    wait_ready "$role"
    fact changed "$changed"
    fact k3s_role "$role"
    fact k3s_version "$("$BIN_DIR/k3s" --version 2>/dev/null | sed -n 's/^k3s version \([^ ]*\).*/\1/p')"
    fact node_name "$node"
}

# What must hold before anything is fetched: ROLE TOKEN.
check_install() {
    [ "$(id -u)" = 0 ] || die "must run as root (set the machine's user to root or give it passwordless sudo)"
    case $1 in server | agent) ;; *) die "role must be server or agent, not '$1'" ;; esac
    [ "$1" = server ] || [ "$2" != - ] || die "an agent needs the server's join token"
    k3s_manager >/dev/null || die "k3s needs systemd or openrc to supervise it; this host has neither"
    have sha256sum || die "sha256sum is missing; install coreutils"
    k3s_arch >/dev/null
    _previous=$(installed_role)
    if [ -z "$_previous" ] && [ -e "$BIN_DIR/k3s" ]; then
        die "k3s is already installed at $BIN_DIR/k3s but not by this program; uninstall it or use gvisor-fleet:kubernetes cluster 'existing'"
    fi
    [ -z "$_previous" ] || [ "$_previous" = "$1" ] ||
        die "this machine is already a k3s $_previous; destroy it before making it a $1"
}

# Prints the SHA-256 the release publishes for ASSET, checked against the
# pin: URL ARCH ASSET PINNED_SHA TMP.
published_sha() {
    fetch "$1/sha256sum-$2.txt" "$5/sums" "$RELEASE_SETTING" ||
        die "k3s release ${1##*/} not found at $1/sha256sum-$2.txt; check gvisor-fleet:kubernetes.k3s.version and releaseUrl"
    _published=$(awk -v f="$3" '$2 == f { print $1 }' "$5/sums")
    [ -n "$_published" ] || die "$1/sha256sum-$2.txt lists no '$3'"
    if [ "$4" != - ] && [ "$4" != "$_published" ]; then
        die "$1/sha256sum-$2.txt says $_published for $3, but gvisor-fleet:kubernetes.k3s.sha256 pins $4; nothing was installed"
    fi
    echo "$_published"
}

# Downloads and checks the binary, unless the one in place is it; prints
# whether it changed (true or false): URL ASSET PUBLISHED TMP.
install_binary() {
    if [ -x "$BIN_DIR/k3s" ] && [ "$(sha256_of "$BIN_DIR/k3s")" = "$3" ]; then
        log "k3s ${1##*/} already installed"
        echo false
        return 0
    fi
    log "downloading $1/$2"
    fetch "$1/$2" "$4/k3s" "$RELEASE_SETTING" || die "download failed: $1/$2"
    [ "$(sha256_of "$4/k3s")" = "$3" ] ||
        die "checksum mismatch for $1/$2 (expected $3); nothing was installed"
    chmod 0755 "$4/k3s"
    mv -f "$4/k3s" "$BIN_DIR/k3s"
    echo true
}

# The binary is ours (checksummed); k3s's install script only writes the
# service, its uninstall script and the kubectl/crictl/ctr links, and only
# enables the service: config.yaml is ours, so it is (re)started here once.
# ROLE SCRIPT_URL TMP
start_k3s() {
    fetch "$2" "$3/install.sh" "$SCRIPT_SETTING" || die "cannot download the k3s install script from $2"
    INSTALL_K3S_SKIP_DOWNLOAD=true INSTALL_K3S_SKIP_START=true INSTALL_K3S_EXEC="$1" \
        INSTALL_K3S_BIN_DIR="$BIN_DIR" sh "$3/install.sh" >&2 || die "the k3s install script failed (see above)"
    service_restart "$(service_name "$1")" "$(k3s_manager)" ||
        die "k3s ($(service_name "$1")) failed to start; see 'journalctl -u $(service_name "$1")'"
}

# ROLE: its containerd answers, and a server's API is ready.
wait_ready() {
    wait_for "k3s $1" "$READY_TRIES" "$BIN_DIR/k3s" crictl info ||
        die "k3s $1 started but its containerd does not answer; see 'journalctl -u $(service_name "$1")'"
    if [ "$1" = server ]; then
        wait_for "the Kubernetes API" "$READY_TRIES" "$BIN_DIR/k3s" kubectl get --raw=/readyz ||
            die "the k3s API server is not ready; see 'journalctl -u k3s'"
    fi
}

cmd_uninstall() {
    role=$(installed_role)
    [ -n "$role" ] || { fact k3s untouched; return 0; }
    if [ "$role" = server ]; then script="$BIN_DIR/k3s-uninstall.sh"; else script="$BIN_DIR/k3s-agent-uninstall.sh"; fi
    if [ -x "$script" ]; then
        "$script" >&2 || log "$script reported errors"
    else
        log "$script is missing; removing only what this program wrote"
        rm -f "$BIN_DIR/k3s"
    fi
    rm -f "$CONFIG_YAML" "$STATE_DIR/install.state"
    fact k3s removed
}
