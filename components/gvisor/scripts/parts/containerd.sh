# shellcheck shell=sh
# The containerd steps: runtime RUNTIME in config.toml (this program's block)
# with its runsc.toml, and their removal.

# CRI serves unless the config disables it; we never do, so it must be "ok".
cri_ok() { [ "$(cri_status)" = ok ]; }

cri_status() {
    timeout 10 ctr --connect-timeout 2s plugins ls 2>/dev/null | awk '$2 == "cri" { print $4 }'
}

# ctr waits for a socket that may never answer; bound each probe.
containerd_serving() { timeout 10 ctr --connect-timeout 2s version >/dev/null 2>&1; }
containerd_up() { containerd_serving; }

# After a restart with runtime RUNTIME: 0, or the part that failed (see
# restart_engine). On k3s and RKE2 the config their service generated must
# hold the runtime too (it rendered the template this program wrote).
containerd_ready() {
    wait_for containerd 30 containerd_serving || return 2
    wait_for "containerd's CRI plugin" 10 cri_ok || return 3
    [ "$CONTAINERD_LAYOUT" = plain ] || rendered_has_block || return 4
}

# What failed: RUNTIME PART (see restart_engine).
containerd_failure() {
    if [ "$2" = 4 ]; then
        echo "$CONTAINERD_SERVICE restarted, but the containerd config it generated ($CONTAINERD_EFFECTIVE) has no runtime $1: it did not render $CONTAINERD_CONFIG"
    elif [ "$2" = 2 ]; then
        echo "containerd restarted with runtime $1 but did not answer on ${CONTAINERD_ADDRESS:-/run/containerd/containerd.sock} within 30s"
    else
        echo "containerd restarted with runtime $1 but its CRI plugin did not load (status: $(cri_status || true))"
    fi
}

# containerd listens where its config says: `[grpc] address` in containerd
# 1.x's `config dump`, the grpc server plugin's `address` in 2.x's (which reads
# an older file's [grpc] table into it).
grpc_address() {
    sed -nE "/^ *\[(grpc|plugins\.[\"']io\.containerd\.server\.v1\.grpc[\"'])\]/,/^ *\[/s/^ *address = [\"']([^\"']*)[\"'].*/\1/p" "$1" | head -n 1
}

# ctr, and the messages that name the socket, follow CONTAINERD_ADDRESS (the
# environment, exported): the address in DUMP, when it names one.
use_grpc_address() {
    _address=$(grpc_address "$1")
    if [ -n "$_address" ]; then
        CONTAINERD_ADDRESS=$_address
        export CONTAINERD_ADDRESS
    fi
}

# The address of the config on disk (restore and verify steps); k3s and
# RKE2 serve on their own (use_layout).
use_configured_address() {
    use_layout
    [ "$CONTAINERD_LAYOUT" = plain ] || return 0
    [ -f "$CONTAINERD_CONFIG" ] && have containerd || return 0
    mkdir -p "$SCRATCH"
    _dump=$(mktemp "$SCRATCH/dump.XXXXXX")
    if containerd --config "$CONTAINERD_CONFIG" config dump > "$_dump" 2>/dev/null; then use_grpc_address "$_dump"; fi
    rm -f "$_dump"
}

cmd_containerd_plan() {
    containerd_plan "$1" "$2"
}

# RUNTIME RUNSC_TOML_B64 PREFIX RUNSC_TOML
cmd_containerd_configure() {
    runtime=$1 prefix=$3 runsc_toml=$4
    use_layout
    if [ "$CONTAINERD_LAYOUT" != plain ]; then
        configure_template "$@"
        return 0
    fi
    if ! have containerd; then
        log "containerd is not installed; skipping"
        fact containerd skipped
        return 0
    fi
    begin_step
    drop_leftovers "$CONTAINERD_CONFIG" "$runsc_toml"
    tmp=$(make_scratch)
    file_version=$(owner_config "$tmp")
    cv=$(containerd_version)
    plan=$(containerd_plan "${cv%%.*}" "$file_version") || exit 1
    version=${plan%% *} plugin=${plan#* }
    new_runsc_toml "$tmp" "$2" "$prefix"
    [ "$file_version" != none ] || echo "version = $version" > "$tmp/config.toml"
    prepare_config "$tmp" "$plugin" "$runtime"
    kept=$(kept_default "$tmp" "$plugin")
    append_runtime_block "$tmp/config.toml" "$plugin" "$runtime" "$runsc_toml" "$kept"
    check_merged "$tmp" "$runtime" "$runsc_toml"
    apply_containerd "$tmp" "runtime $runtime (config version $version, $plugin)"
    fact containerd_config_version "$version"
}

# TMP's config.toml and runsc.toml take effect (configure flow), unless
# containerd already serves them and SERVED (a command, if given) passes:
# TMP DESCRIPTION [SERVED].
apply_containerd() {
    if containerd_configured "$1" "$runsc_toml" && "${3:-true}"; then
        log "$(engine_label containerd) already configured with runtime $runtime"
        fact containerd unchanged
    else
        apply_configs containerd "$runtime" "$2" \
            "$1/runsc.toml" "$runsc_toml" containerd:runsc-toml-written \
            "$1/config.toml" "$CONTAINERD_CONFIG" containerd:written
        fact containerd configured
    fi
}

# The owner's config without this program's block, in TMP/config.toml (none
# when there is no file); Docker's default file comes out as version 2.
# Prints the file's version.
owner_config() {
    _owner_version=$(config_file_version "$CONTAINERD_CONFIG")
    if [ "$_owner_version" != none ]; then
        strip_block "$CONTAINERD_CONFIG" > "$1/config.toml"
    fi
    if [ "$_owner_version" = 1 ] && upgrade_docker_default_config "$1/config.toml" > "$1/upgraded.toml"; then
        log "$CONTAINERD_CONFIG is Docker's default (version 1, CRI disabled): rewriting it as version 2"
        mv "$1/upgraded.toml" "$1/config.toml"
        _owner_version=2
    fi
    echo "$_owner_version"
}

# TMP/runsc.toml from its base64 form, every runsc flag in it known to the
# installed runsc: TMP RUNSC_TOML_B64 PREFIX.
new_runsc_toml() {
    [ -x "$3/containerd-shim-runsc-v1" ] || have containerd-shim-runsc-v1 ||
        die "containerd-shim-runsc-v1 is not installed (release $(sed -n 's/^release=//p' "$INSTALL_STATE" 2>/dev/null) has none); pin a release that ships it or set gvisor-fleet:containerd to off"
    printf '%s' "$2" | base64 -d > "$1/runsc.toml" || die "cannot decode runsc.toml"
    # shellcheck disable=SC2046 # flag names are single words
    check_runsc_flags "$3/runsc" $(sed -n '/^\[runsc_config\]/,/^\[/s/^ *\([A-Za-z0-9_.-]*\) *=.*/\1/p' "$1/runsc.toml")
}

# TMP/config.toml refused when it already has runtime RUNTIME, and with CRI
# enabled: TMP PLUGIN RUNTIME.
prepare_config() {
    if grep -Eq "^ *\[plugins\.[\"']${2}[\"']\.containerd\.runtimes\.$3(\.options)?\]" "$1/config.toml"; then
        die "$CONTAINERD_CONFIG already defines [plugins.\"$2\".containerd.runtimes.$3] outside this program's block; remove it or set gvisor-fleet:runtimeName to another name"
    fi
    enable_cri "$1/config.toml" > "$1/cri.toml"
    if ! cmp -s "$1/cri.toml" "$1/config.toml"; then
        log "enabling the CRI plugin (it was listed in disabled_plugins)"
        mv "$1/cri.toml" "$1/config.toml"
    fi
}

# A file that names no runtime relies on containerd's built-in default
# (runc); naming ours replaces the built-in map, and CRI then fails with
# "no corresponding runtime configured ... default_runtime_name". Prints that
# runtime's "NAME TYPE" to keep, or nothing: TMP PLUGIN.
kept_default() {
    grep -Eq "^ *\[plugins\.[\"']${2}[\"']\.containerd\.runtimes\." "$1/config.toml" && return 0
    dump_candidate "$1/config.toml" "$1/before.toml" "$1/err" ||
        die "containerd rejects $CONTAINERD_CONFIG as it is: $(config_reason "$1/config.toml" "$1/err"); fix it first"
    _keep_name=$(default_runtime "$1/before.toml")
    _keep_type=$(sed -n "/runtimes\.$_keep_name\]/,/runtime_type/s/^ *runtime_type = //p" "$1/before.toml" | head -n 1)
    [ -z "$_keep_name" ] || [ -z "$_keep_type" ] || echo "$_keep_name $_keep_type"
}

# Appends this program's block: FILE PLUGIN RUNTIME RUNSC_TOML KEPT ("NAME TYPE" or empty).
append_runtime_block() {
    _block_table="plugins.\"$2\".containerd.runtimes.$3"
    # The block starts on a line of its own, without adding a blank line each run.
    [ -z "$(tail -c 1 "$1")" ] || echo >> "$1"
    {
        echo "$BLOCK_BEGIN"
        if [ -n "$5" ]; then
            echo "[plugins.\"$2\".containerd.runtimes.${5%% *}]"
            echo "  runtime_type = ${5#* }"
        fi
        echo "[$_block_table]"
        echo "  runtime_type = \"io.containerd.runsc.v1\""
        echo "[$_block_table.options]"
        echo "  TypeUrl = \"io.containerd.runsc.v1.options\""
        echo "  ConfigPath = \"$4\""
        echo "$BLOCK_END"
    } >> "$1"
}

# Validates the merged TMP/config.toml before it takes effect: it must parse,
# and the runtime must survive imports (on 1.x an imported CRI table replaces
# ours). Its gRPC address is the one used from here on: TMP RUNTIME RUNSC_TOML.
check_merged() {
    dump_candidate "$1/config.toml" "$1/dump.toml" "$1/err" ||
        die "containerd rejects the merged $CONTAINERD_CONFIG: $(config_reason "$1/config.toml" "$1/err"); nothing was changed"
    use_grpc_address "$1/dump.toml"
    if ! grep -Eq "ConfigPath = [\"']${3}[\"']" "$1/dump.toml"; then
        _drop_ins=$(cri_drop_ins "$1/config.toml")
        [ -z "$_drop_ins" ] ||
            die "after merging, containerd's effective config has no runtime '$2': $_drop_ins, imported by $CONTAINERD_CONFIG (imports = [...]), define the CRI plugin's table, and containerd $(containerd_version) lets an imported table replace the main file's; move those CRI settings into $CONTAINERD_CONFIG, or upgrade to containerd 2, which merges them. Nothing was changed"
        die "after merging, containerd's effective config has no runtime '$2': an imported file (imports = [...]) probably redefines the CRI plugin table and replaces it; move the CRI settings into $CONTAINERD_CONFIG. Nothing was changed"
    fi
    _merged_default=$(default_runtime "$1/dump.toml")
    [ -z "$_merged_default" ] || grep -Fq "runtimes.$_merged_default]" "$1/dump.toml" ||
        die "after merging, containerd's default runtime '$_merged_default' has no runtime table; CRI would fail. Nothing was changed"
}

# True when both files are as TMP has them and containerd serves them: TMP RUNSC_TOML.
containerd_configured() {
    [ -f "$CONTAINERD_CONFIG" ] && cmp -s "$1/config.toml" "$CONTAINERD_CONFIG" &&
        [ -f "$2" ] && cmp -s "$1/runsc.toml" "$2" &&
        ! restart_pending "$CONTAINERD_CONFIG" && ! restart_pending "$2" && containerd_serving
}

# RUNSC_TOML
cmd_containerd_restore() {
    begin_step
    use_layout
    drop_leftovers "$CONTAINERD_CONFIG" "$1"
    use_configured_address
    has_backup "$CONTAINERD_CONFIG" || has_backup "$1" || { fact containerd untouched; return 0; }
    put_back "$1"
    if [ "$CONTAINERD_LAYOUT" = plain ]; then
        restore_config containerd containerd-restore "$CONTAINERD_CONFIG" take_out_containerd_block
    else
        restore_config containerd containerd-restore "$CONTAINERD_CONFIG" take_out_template_block
    fi
    restart_restored containerd "$CONTAINERD_CONFIG"
    forget "$CONTAINERD_CONFIG"
    forget "$1"
    fact containerd restored
}

# Takes this program's block out of FILE, keeping the owner's edits.
take_out_containerd_block() {
    _take_tmp=$(make_scratch)
    strip_block "$1" > "$_take_tmp/config.toml"
    replace_file "$_take_tmp/config.toml" "$1"
}
