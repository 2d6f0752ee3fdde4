# shellcheck shell=sh
# The runtime in k3s's own containerd, through its config template; and
# reading back what the program needs.

# k3s's own containerd: its major version picks the template generation.
# containerd 2.x renders config-v3.toml.tmpl (config version 3); 1.x renders
# config.toml.tmpl (config version 2). A table of the wrong generation is
# silently ignored (gvisor#13985), so the version is read, never guessed.
containerd_major() {
    _major=$("$BIN_DIR/k3s" ctr --version 2>/dev/null | sed -n 's/.* v\{0,1\}\([0-9][0-9]*\)\.[0-9].*/\1/p' | head -n 1)
    if [ -z "$_major" ] && [ -f "$CONTAINERD_DIR/config.toml" ]; then
        case $(sed -n 's/^version *= *\([0-9]*\).*/\1/p' "$CONTAINERD_DIR/config.toml" | head -n 1) in
            3) _major=2 ;;
            *) _major=1 ;;
        esac
    fi
    [ -n "$_major" ] || die "cannot tell which containerd k3s embeds ('k3s ctr --version' printed nothing)"
    echo "$_major"
}

# PLUGIN RUNTIME SHIM RUNSC_TOML
runtime_block() {
    _table="plugins.$1.containerd.runtimes.$2"
    echo "$BLOCK_BEGIN"
    echo "[$_table]"
    echo "  runtime_type = \"io.containerd.runsc.v1\""
    echo "  runtime_path = \"$3\""
    echo "[$_table.options]"
    echo "  TypeUrl = \"io.containerd.runsc.v1.options\""
    echo "  ConfigPath = \"$4\""
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

# RUNTIME RUNSC_TOML
runtime_loaded() {
    grep -Fq "ConfigPath = \"$2\"" "$CONTAINERD_DIR/config.toml" 2>/dev/null &&
        "$BIN_DIR/k3s" crictl info 2>/dev/null | grep -q "\"$1\""
}

# RUNTIME SHIM RUNSC_TOML_B64 RUNSC_TOML
cmd_runtime_configure() {
    runtime=$1 shim=$2 runsc_toml=$4
    role=$(installed_role)
    [ -n "$role" ] || die "k3s is not installed by this program on this machine; run the install step first"
    [ -x "$shim" ] || die "$shim is missing: the gVisor install step must run first (gvisor-fleet:installDir)"
    mkdir -p "$CONTAINERD_DIR" "$STATE_DIR" "$(dirname "$ROOT$runsc_toml")"
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    plan=$(template_plan) || exit 1
    file="$CONTAINERD_DIR/${plan% *}" version=${plan#* }
    new_template "$file" "$tmp/template" "$(plugin_id "$version")" "$runtime" "$shim" "$runsc_toml"
    new_k3s_runsc_toml "$3" "$tmp/runsc.toml"
    if [ -f "$file" ] && cmp -s "$tmp/template" "$file" && cmp -s "$tmp/runsc.toml" "$ROOT$runsc_toml" &&
        runtime_loaded "$runtime" "$runsc_toml"; then
        log "k3s's containerd already has runtime $runtime"
        fact k3s_runtime unchanged
    else
        apply_template "$file" "$tmp" "$runtime" "$runsc_toml" "$(service_name "$role")"
        fact k3s_runtime configured
    fi
    fact k3s_template "${file#"$CONTAINERD_DIR"/}"
    fact k3s_containerd_config_version "$version"
    fact k3s_runtime_ok true
}

# The template FILE with this program's block, in OUT: FILE OUT PLUGIN RUNTIME SHIM RUNSC_TOML.
new_template() {
    if [ -f "$1" ]; then
        strip_block "$1" > "$2"
    else
        echo "$BASE_LINE" > "$2"
        [ -f "$STATE_DIR/template.created" ] || : > "$STATE_DIR/template.created"
    fi
    grep -Fq "$BASE_LINE" "$2" || grep -q 'runtimes\.' "$2" ||
        log "$1 does not extend k3s's base template; k3s's defaults apply only if it copies them"
    if grep -q "runtimes\.['\"]\{0,1\}${4}['\"]\{0,1\}\]" "$2"; then
        die "$1 already defines a runtime '$4' outside this program's block; remove it or set gvisor-fleet:runtimeName to another name"
    fi
    [ -z "$(tail -c 1 "$2")" ] || echo >> "$2"
    runtime_block "$3" "$4" "$5" "$6" >> "$2"
}

# runsc.toml from its base64 form, in OUT: RUNSC_TOML_B64 OUT. k3s's kubelet
# uses the systemd cgroup driver where systemd runs; runsc must then use it
# too, or pod limits are silently not enforced (gvisor#10371).
new_k3s_runsc_toml() {
    printf '%s' "$1" | base64 -d > "$2" || die "cannot decode runsc.toml"
    if grep -q 'SystemdCgroup *= *true' "$CONTAINERD_DIR/config.toml" 2>/dev/null &&
        ! grep -q '^ *systemd-cgroup *=' "$2"; then
        echo '  systemd-cgroup = "true"' >> "$2"
        fact systemd_cgroup true
    fi
}

# Writes TMP's runsc.toml and template, restarts k3s (SERVICE) and waits for
# the runtime; on failure the previous template goes back:
# FILE TMP RUNTIME RUNSC_TOML SERVICE.
apply_template() {
    [ ! -f "$1" ] || cp -p "$1" "$2/previous.tmpl"
    replace_file "$2/runsc.toml" "$ROOT$4"
    replace_file "$2/template" "$1"
    if ! { service_restart "$5" "$(k3s_manager)" &&
        wait_for "k3s's containerd" "$READY_TRIES" runtime_loaded "$3" "$4"; }; then
        log "k3s did not come back with runtime $3; restoring the previous template"
        if [ -f "$2/previous.tmpl" ]; then mv -f "$2/previous.tmpl" "$1"; else rm -f "$1"; fi
        service_restart "$5" "$(k3s_manager)" || true
        die "k3s's containerd did not load runtime $3 from $1; see 'journalctl -u $5'"
    fi
    log "k3s restarted with runtime $3 from ${1#"$CONTAINERD_DIR"/}"
}

# RUNSC_TOML
cmd_runtime_restore() {
    role=$(installed_role)
    changed=false
    for name in config-v3.toml.tmpl config.toml.tmpl; do
        file="$CONTAINERD_DIR/$name"
        if ! [ -f "$file" ] || ! has_block "$file"; then
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
    rm -f "$ROOT$1" "$STATE_DIR/template.created"
    if [ "$changed" = true ] && [ -n "$role" ] && service_active "$(service_name "$role")" "$(k3s_manager)"; then
        service_restart "$(service_name "$role")" "$(k3s_manager)" || log "k3s restart failed after removing the runtime"
    fi
    fact k3s_runtime removed
}
