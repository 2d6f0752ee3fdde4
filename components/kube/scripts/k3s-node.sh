#!/bin/sh
# k3s node agent: sent on stdin by the KubeDeployment component and run as
#   sh -s -- <subcommand> [args...]
# Installs k3s (server or agent) from a pinned, checksummed release, gives
# k3s's own containerd the gVisor runtime through its config template, and
# reads back what the program needs (token, kubeconfig). Every subcommand is
# idempotent. Facts go to stdout as key=value lines; progress and errors go to
# stderr. GVISOR_FLEET_ROOT (tests only) prefixes every path the script touches.
set -eu

ROOT=${GVISOR_FLEET_ROOT:-}
BIN_DIR="$ROOT/usr/local/bin"
CONFIG_DIR="$ROOT/etc/rancher/k3s"
CONFIG_YAML="$CONFIG_DIR/config.yaml"
DATA_DIR="$ROOT/var/lib/rancher/k3s"
CONTAINERD_DIR="$DATA_DIR/agent/etc/containerd"
STATE_DIR="$ROOT/var/lib/gvisor-fleet/k3s"
BLOCK_BEGIN="# BEGIN gvisor-fleet runtime (managed; removed on destroy)"
BLOCK_END="# END gvisor-fleet runtime"
BASE_LINE='{{ template "base" . }}'
READY_TRIES=${GVISOR_FLEET_READY_TRIES:-180}

log() { printf 'k3s-node: %s\n' "$*" >&2; }
die() { printf 'k3s-node: ERROR: %s\n' "$*" >&2; exit 1; }
fact() { printf '%s=%s\n' "$1" "$2"; }
have() { command -v "$1" >/dev/null 2>&1; }

fetch() {
    _fetch_url=$1 _fetch_dest=$2
    if have curl; then
        curl -fsSL --retry 3 --connect-timeout 20 -o "$_fetch_dest" "$_fetch_url"
    elif have wget; then
        wget -q -T 20 -t 3 -O "$_fetch_dest" "$_fetch_url"
    else
        die "neither curl nor wget is installed; install one of them to download k3s"
    fi
}

# Waits (bounded) until a probe command succeeds.
wait_for() {
    what=$1 tries=$2
    shift 2
    i=0
    while [ "$i" -lt "$tries" ]; do
        if "$@" >/dev/null 2>&1; then
            return 0
        fi
        i=$((i + 1))
        sleep 1
    done
    log "$what did not become ready within ${tries}s"
    return 1
}

service_name() {
    if [ "$1" = server ]; then echo k3s; else echo k3s-agent; fi
}

service_restart() {
    if have systemctl; then
        systemctl restart "$1"
    elif have rc-service; then
        rc-service "$1" restart
    else
        die "cannot restart $1: neither systemctl nor rc-service is installed"
    fi
}

service_active() {
    if have systemctl; then
        systemctl is-active --quiet "$1"
    else
        rc-service "$1" status >/dev/null 2>&1
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

# k3s's own containerd: its major version picks the template generation.
# containerd 2.x renders config-v3.toml.tmpl (config version 3); 1.x renders
# config.toml.tmpl (config version 2). A table of the wrong generation is
# silently ignored (gvisor#13985), so the version is read, never guessed.
containerd_major() {
    v=$("$BIN_DIR/k3s" ctr --version 2>/dev/null | sed -n 's/.* v\{0,1\}\([0-9][0-9]*\)\.[0-9].*/\1/p' | head -n 1)
    if [ -z "$v" ] && [ -f "$CONTAINERD_DIR/config.toml" ]; then
        case $(sed -n 's/^version *= *\([0-9]*\).*/\1/p' "$CONTAINERD_DIR/config.toml" | head -n 1) in
            3) v=2 ;;
            *) v=1 ;;
        esac
    fi
    [ -n "$v" ] || die "cannot tell which containerd k3s embeds ('k3s ctr --version' printed nothing)"
    echo "$v"
}

# --- install -----------------------------------------------------------------

write_config() {
    role=$1 node=$2 server_url=$3 tls_san=$4 token=$5 out=$6
    {
        echo "# Written by gvisor-fleet; the next 'pulumi up' replaces manual edits."
        echo "node-name: \"$node\""
        if [ "$role" = server ]; then
            echo "write-kubeconfig-mode: \"0600\""
            [ "$tls_san" = - ] || echo "tls-san: [\"$tls_san\"]"
        else
            echo "server: \"$server_url\""
            echo "token: \"$token\""
        fi
    } > "$out"
}

cmd_install() {
    role=$1 version=$2 release_url=$3 script_url=$4 pinned_sha=$5 node=$6 server_url=$7 tls_san=$8
    token=${9:--}
    [ "$(id -u)" = 0 ] || die "must run as root (set the machine's user to root or give it passwordless sudo)"
    case $role in server | agent) ;; *) die "role must be server or agent, not '$role'" ;; esac
    [ "$role" = server ] || [ "$token" != - ] || die "an agent needs the server's join token"
    have systemctl || have rc-service || die "k3s needs systemd or openrc to supervise it; this host has neither"
    have sha256sum || die "sha256sum is missing; install coreutils"
    arch=$(k3s_arch)
    previous=$(installed_role)
    if [ -z "$previous" ] && [ -e "$BIN_DIR/k3s" ]; then
        die "k3s is already installed at $BIN_DIR/k3s but not by this program; uninstall it or use gvisor-fleet:kubernetes cluster 'existing'"
    fi
    [ -z "$previous" ] || [ "$previous" = "$role" ] ||
        die "this machine is already a k3s $previous; destroy it before making it a $role"

    mkdir -p "$STATE_DIR" "$CONFIG_DIR" "$BIN_DIR"
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    if [ "$arch" = amd64 ]; then asset=k3s; else asset="k3s-$arch"; fi
    url="$release_url/$version"
    fetch "$url/sha256sum-$arch.txt" "$tmp/sums" ||
        die "k3s release $version not found at $url/sha256sum-$arch.txt; check gvisor-fleet:kubernetes.k3s.version and releaseUrl"
    published=$(awk -v f="$asset" '$2 == f { print $1 }' "$tmp/sums")
    [ -n "$published" ] || die "$url/sha256sum-$arch.txt lists no '$asset'"
    if [ "$pinned_sha" != - ] && [ "$pinned_sha" != "$published" ]; then
        die "$url/sha256sum-$arch.txt says $published for $asset, but gvisor-fleet:kubernetes.k3s.sha256 pins $pinned_sha; nothing was installed"
    fi

    changed=false
    if [ -x "$BIN_DIR/k3s" ] && [ "$(sha256sum "$BIN_DIR/k3s" | cut -d' ' -f1)" = "$published" ]; then
        log "k3s $version already installed"
    else
        log "downloading $url/$asset"
        fetch "$url/$asset" "$tmp/k3s" || die "download failed: $url/$asset"
        [ "$(sha256sum "$tmp/k3s" | cut -d' ' -f1)" = "$published" ] ||
            die "checksum mismatch for $url/$asset (expected $published); nothing was installed"
        chmod 0755 "$tmp/k3s"
        mv -f "$tmp/k3s" "$BIN_DIR/k3s"
        changed=true
    fi

    write_config "$role" "$node" "$server_url" "$tls_san" "$token" "$tmp/config.yaml"
    if ! cmp -s "$tmp/config.yaml" "$CONFIG_YAML"; then
        (umask 077 && cp "$tmp/config.yaml" "$CONFIG_YAML.tmp")
        mv -f "$CONFIG_YAML.tmp" "$CONFIG_YAML"
        changed=true
    fi
    printf 'role=%s\nversion=%s\nnode=%s\n' "$role" "$version" "$node" > "$STATE_DIR/install.state"

    svc=$(service_name "$role")
    if [ "$changed" = true ] || ! service_active "$svc"; then
        fetch "$script_url" "$tmp/install.sh" || die "cannot download the k3s install script from $script_url"
        # The binary is ours (checksummed above); the script only writes the
        # service, its uninstall script and the kubectl/crictl/ctr links.
        # It only enables the service: config.yaml is ours, so we (re)start it once.
        INSTALL_K3S_SKIP_DOWNLOAD=true INSTALL_K3S_SKIP_START=true INSTALL_K3S_EXEC="$role" \
            INSTALL_K3S_BIN_DIR="$BIN_DIR" sh "$tmp/install.sh" >&2 || die "the k3s install script failed (see above)"
        service_restart "$svc" || die "k3s ($svc) failed to start; see 'journalctl -u $svc'"
    fi
    wait_for "k3s $role" "$READY_TRIES" "$BIN_DIR/k3s" crictl info ||
        die "k3s $role started but its containerd does not answer; see 'journalctl -u $svc'"
    if [ "$role" = server ]; then
        wait_for "the Kubernetes API" "$READY_TRIES" "$BIN_DIR/k3s" kubectl get --raw=/readyz ||
            die "the k3s API server is not ready; see 'journalctl -u k3s'"
    fi
    fact changed "$changed"
    fact k3s_role "$role"
    fact k3s_version "$("$BIN_DIR/k3s" --version 2>/dev/null | sed -n 's/^k3s version \([^ ]*\).*/\1/p')"
    fact node_name "$node"
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

# --- containerd runtime --------------------------------------------------------

strip_block() {
    sed "/^$BLOCK_BEGIN\$/,/^$BLOCK_END\$/d" "$1"
}

runtime_block() {
    plugin=$1 runtime=$2 shim=$3 runsc_toml=$4
    table="plugins.$plugin.containerd.runtimes.$runtime"
    echo "$BLOCK_BEGIN"
    echo "[$table]"
    echo "  runtime_type = \"io.containerd.runsc.v1\""
    echo "  runtime_path = \"$shim\""
    echo "[$table.options]"
    echo "  TypeUrl = \"io.containerd.runsc.v1.options\""
    echo "  ConfigPath = \"$runsc_toml\""
    echo "$BLOCK_END"
}

# The template file this k3s reads, and the plugin id its config version uses.
# A template the owner already keeps is extended in place (whatever its
# generation), so their settings survive; otherwise the generation matches
# the embedded containerd.
template_plan() {
    if [ -f "$CONTAINERD_DIR/config-v3.toml.tmpl" ]; then
        echo "config-v3.toml.tmpl 3"
    elif [ -f "$CONTAINERD_DIR/config.toml.tmpl" ]; then
        echo "config.toml.tmpl 2"
    elif [ "$(containerd_major)" -ge 2 ]; then
        echo "config-v3.toml.tmpl 3"
    else
        echo "config.toml.tmpl 2"
    fi
}

plugin_id() {
    if [ "$1" = 3 ]; then echo "'io.containerd.cri.v1.runtime'"; else echo '"io.containerd.grpc.v1.cri"'; fi
}

runtime_loaded() {
    runtime=$1 runsc_toml=$2
    grep -Fq "ConfigPath = \"$runsc_toml\"" "$CONTAINERD_DIR/config.toml" 2>/dev/null &&
        "$BIN_DIR/k3s" crictl info 2>/dev/null | grep -q "\"$runtime\""
}

cmd_runtime_configure() {
    runtime=$1 shim=$2 runsc_toml_b64=$3 runsc_toml=$4
    role=$(installed_role)
    [ -n "$role" ] || die "k3s is not installed by this program on this machine; run the install step first"
    [ -x "$shim" ] || die "$shim is missing: the gVisor install step must run first (gvisor-fleet:installDir)"
    mkdir -p "$CONTAINERD_DIR" "$STATE_DIR" "$(dirname "$ROOT$runsc_toml")"
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT

    plan=$(template_plan) || exit 1
    file="$CONTAINERD_DIR/${plan% *}" version=${plan#* }
    plugin=$(plugin_id "$version")
    if [ -f "$file" ]; then
        strip_block "$file" > "$tmp/template"
    else
        echo "$BASE_LINE" > "$tmp/template"
        [ -f "$STATE_DIR/template.created" ] || : > "$STATE_DIR/template.created"
    fi
    grep -Fq "$BASE_LINE" "$tmp/template" || grep -q 'runtimes\.' "$tmp/template" ||
        log "$file does not extend k3s's base template; k3s's defaults apply only if it copies them"
    if grep -q "runtimes\.['\"]\{0,1\}${runtime}['\"]\{0,1\}\]" "$tmp/template"; then
        die "$file already defines a runtime '$runtime' outside this program's block; remove it or set gvisor-fleet:runtimeName to another name"
    fi
    [ -z "$(tail -c 1 "$tmp/template")" ] || echo >> "$tmp/template"
    runtime_block "$plugin" "$runtime" "$shim" "$runsc_toml" >> "$tmp/template"

    printf '%s' "$runsc_toml_b64" | base64 -d > "$tmp/runsc.toml" || die "cannot decode runsc.toml"
    # k3s's kubelet uses the systemd cgroup driver where systemd runs; runsc
    # must then use it too, or pod limits are silently not enforced (gvisor#10371).
    if grep -q 'SystemdCgroup *= *true' "$CONTAINERD_DIR/config.toml" 2>/dev/null &&
        ! grep -q '^ *systemd-cgroup *=' "$tmp/runsc.toml"; then
        echo '  systemd-cgroup = "true"' >> "$tmp/runsc.toml"
        fact systemd_cgroup true
    fi

    svc=$(service_name "$role")
    if [ -f "$file" ] && cmp -s "$tmp/template" "$file" && cmp -s "$tmp/runsc.toml" "$ROOT$runsc_toml" &&
        runtime_loaded "$runtime" "$runsc_toml"; then
        log "k3s's containerd already has runtime $runtime"
        fact k3s_runtime unchanged
    else
        [ -f "$file" ] && cp -p "$file" "$tmp/previous.tmpl"
        cp "$tmp/runsc.toml" "$ROOT$runsc_toml.tmp" && mv -f "$ROOT$runsc_toml.tmp" "$ROOT$runsc_toml"
        cp "$tmp/template" "$file.tmp" && mv -f "$file.tmp" "$file"
        if ! { service_restart "$svc" && wait_for "k3s's containerd" "$READY_TRIES" runtime_loaded "$runtime" "$runsc_toml"; }; then
            log "k3s did not come back with runtime $runtime; restoring the previous template"
            if [ -f "$tmp/previous.tmpl" ]; then mv -f "$tmp/previous.tmpl" "$file"; else rm -f "$file"; fi
            service_restart "$svc" || true
            die "k3s's containerd did not load runtime $runtime from $file; see 'journalctl -u $svc'"
        fi
        log "k3s restarted with runtime $runtime from ${file#"$CONTAINERD_DIR"/}"
        fact k3s_runtime configured
    fi
    fact k3s_template "${file#"$CONTAINERD_DIR"/}"
    fact k3s_containerd_config_version "$version"
    fact k3s_runtime_ok true
}

cmd_runtime_restore() {
    runsc_toml=$1
    role=$(installed_role)
    changed=false
    for name in config-v3.toml.tmpl config.toml.tmpl; do
        file="$CONTAINERD_DIR/$name"
        if ! [ -f "$file" ] || ! grep -Fqx "$BLOCK_BEGIN" "$file"; then
            continue
        fi
        strip_block "$file" > "$file.tmp"
        # A template this program created holds nothing else: remove it.
        if [ -f "$STATE_DIR/template.created" ] && [ "$(grep -v '^[[:space:]]*$' "$file.tmp")" = "$BASE_LINE" ]; then
            rm -f "$file" "$file.tmp"
        else
            mv -f "$file.tmp" "$file"
        fi
        changed=true
    done
    rm -f "$ROOT$runsc_toml" "$STATE_DIR/template.created"
    if [ "$changed" = true ] && [ -n "$role" ] && service_active "$(service_name "$role")"; then
        service_restart "$(service_name "$role")" || log "k3s restart failed after removing the runtime"
    fi
    fact k3s_runtime removed
}

# --- read back -----------------------------------------------------------------

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
        "$BIN_DIR/k3s" kubectl wait --for=condition=Ready "node/$node" --timeout="${READY_TRIES}s" >&2 ||
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
