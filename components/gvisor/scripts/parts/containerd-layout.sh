# shellcheck shell=sh
# Where this node's containerd takes its config from (the layout): the file
# containerd reads (plain), or, on k3s and RKE2, a template their service
# renders into containerd's config.toml at each start. use_layout points the
# containerd steps at the file they write and the service they restart.

RANCHER_DIR=${GVISOR_FLEET_RANCHER_DIR:-/var/lib/rancher}
# k3s and RKE2 serve their containerd here, whatever its config says.
RANCHER_SOCKET=/run/k3s/containerd/containerd.sock
# The line of a k3s/RKE2 template that pulls in their built-in config.
BASE_LINE='{{ template "base" . }}'
# Set by use_layout: plain, k3s or rke2; the file containerd reads (for k3s
# and RKE2 their generated config.toml, never written here); the service
# that restarts containerd.
CONTAINERD_LAYOUT=plain
CONTAINERD_EFFECTIVE=$CONTAINERD_CONFIG
CONTAINERD_SERVICE=containerd

rancher_conf_dir() { echo "$RANCHER_DIR/$1/agent/etc/containerd"; }

# The k3s or RKE2 whose containerd this node runs, or nothing. A k3s that
# this program's own k3s step installed (cluster: k3s) keeps its runtime
# through that step, not this one.
rancher_dist() {
    for _dist in k3s rke2; do
        [ -d "$(rancher_conf_dir "$_dist")" ] || continue
        if [ "$_dist" = k3s ] && [ -f "$STATE_DIR/k3s/install.state" ]; then continue; fi
        echo "$_dist"
        return 0
    done
}

rancher_units() { if [ "$1" = k3s ]; then echo "k3s k3s-agent"; else echo "rke2-server rke2-agent"; fi; }

# The unit running DIST (its server's or its agent's), or nothing.
rancher_service() {
    for _unit in $(rancher_units "$1"); do
        if service_active "$_unit"; then
            echo "$_unit"
            return 0
        fi
    done
}

# The template DIST renders: one the owner keeps (config-v3.toml.tmpl first,
# as k3s reads it first), else the generation of the config it rendered last.
rancher_template() {
    _tdir=$(rancher_conf_dir "$1")
    if [ -f "$_tdir/config-v3.toml.tmpl" ]; then
        echo "$_tdir/config-v3.toml.tmpl"
    elif [ -f "$_tdir/config.toml.tmpl" ]; then
        echo "$_tdir/config.toml.tmpl"
    elif [ "$(config_file_version "$_tdir/config.toml")" = 3 ]; then
        echo "$_tdir/config-v3.toml.tmpl"
    else
        echo "$_tdir/config.toml.tmpl"
    fi
}

# The template of DIST this program wrote before (it has a journal), if any.
journaled_template() {
    for _name in config-v3.toml.tmpl config.toml.tmpl; do
        if has_backup "$(rancher_conf_dir "$1")/$_name"; then
            echo "$(rancher_conf_dir "$1")/$_name"
            return 0
        fi
    done
}

# Once per run: the layout, from what this program wrote before, else from
# what the node has. k3s's and RKE2's own containerd and ctr come first on
# PATH (k3s: data/current/bin; RKE2: bin).
use_layout() {
    [ -z "${LAYOUT_CHOSEN:-}" ] || return 0
    LAYOUT_CHOSEN=yes
    has_backup "$CONTAINERD_CONFIG" && return 0
    for _dist in k3s rke2; do
        _template=$(journaled_template "$_dist")
        [ -z "$_template" ] || break
    done
    if [ -z "$_template" ]; then
        _dist=$(rancher_dist)
        [ -n "$_dist" ] || return 0
        _template=$(rancher_template "$_dist")
    fi
    CONTAINERD_LAYOUT=$_dist
    CONTAINERD_CONFIG=$_template
    CONTAINERD_EFFECTIVE="$(rancher_conf_dir "$_dist")/config.toml"
    # (Neither unit runs: configure refuses; restore restarts nothing, since
    # containerd did not answer, and the messages name the server's unit.)
    CONTAINERD_SERVICE=$(rancher_service "$_dist")
    RANCHER_STOPPED=$([ -n "$CONTAINERD_SERVICE" ] || echo yes)
    [ -n "$CONTAINERD_SERVICE" ] || CONTAINERD_SERVICE=$(rancher_units "$_dist" | cut -d' ' -f1)
    CONTAINERD_ADDRESS=$RANCHER_SOCKET
    export CONTAINERD_ADDRESS
    PATH="$RANCHER_DIR/$_dist/data/current/bin:$RANCHER_DIR/$_dist/bin:$PATH"
}

# The containerd step on k3s or RKE2 (see cmd_containerd_configure): this
# program's block appended to the template (created as the base template and
# the block when the owner keeps none), checked as containerd will read it,
# then the service restarted and its generated config checked for the block:
# RUNTIME RUNSC_TOML_B64 PREFIX RUNSC_TOML.
configure_template() {
    runtime=$1 prefix=$3 runsc_toml=$4
    _units=$(rancher_units "$CONTAINERD_LAYOUT")
    [ -f "$CONTAINERD_EFFECTIVE" ] ||
        die "$CONTAINERD_LAYOUT's containerd config $CONTAINERD_EFFECTIVE is missing: $CONTAINERD_LAYOUT has not started on this node; start it (${_units% *} or ${_units#* }), then run again"
    [ -z "${RANCHER_STOPPED:-}" ] ||
        die "$CONTAINERD_LAYOUT is on this node ($(rancher_conf_dir "$CONTAINERD_LAYOUT")) but neither ${_units% *} nor ${_units#* } runs; start the one this node uses, then run again"
    have ctr || die "no ctr for $CONTAINERD_LAYOUT's containerd (looked in $RANCHER_DIR/$CONTAINERD_LAYOUT/data/current/bin, $RANCHER_DIR/$CONTAINERD_LAYOUT/bin and PATH); install $CONTAINERD_LAYOUT's own binaries or set gvisor-fleet:containerd to off"
    begin_step
    drop_leftovers "$CONTAINERD_CONFIG" "$runsc_toml"
    tmp=$(make_scratch)
    version=$(config_file_version "$CONTAINERD_EFFECTIVE")
    case $version in
        3 | 4) plugin=io.containerd.cri.v1.runtime ;;
        *) plugin=io.containerd.grpc.v1.cri ;;
    esac
    new_runsc_toml "$tmp" "$2" "$prefix"
    new_template "$tmp" "$plugin" "$runtime"
    append_runtime_block "$tmp/config.toml" "$plugin" "$runtime" "$runsc_toml" ""
    check_rendered "$tmp" "$plugin" "$runtime"
    apply_containerd "$tmp" "runtime $runtime (from $CONTAINERD_CONFIG, config version $version)" rendered_has_block
    fact containerd_layout "$CONTAINERD_LAYOUT"
    fact containerd_template "$CONTAINERD_CONFIG"
    fact containerd_config_version "$version"
}

# TMP/config.toml: the owner's template without this program's block, or the
# base template alone. A template is refused when the block cannot be added
# at its end safely: it defines RUNTIME itself, or its end is inside an
# unclosed {{ if }}/{{ range }}/{{ with }}/{{ define }}/{{ block }}: TMP PLUGIN RUNTIME.
new_template() {
    if [ -f "$CONTAINERD_CONFIG" ]; then
        strip_block "$CONTAINERD_CONFIG" > "$1/config.toml"
    else
        echo "$BASE_LINE" > "$1/config.toml"
    fi
    if grep -Eq "runtimes\.[\"']?$3[\"']?(\.options)?\]" "$1/config.toml"; then
        die "$CONTAINERD_CONFIG already defines a runtime '$3' outside this program's block; remove it or set gvisor-fleet:runtimeName to another name"
    fi
    _open=$(template_depth "$1/config.toml")
    [ "$_open" = 0 ] ||
        die "$CONTAINERD_CONFIG ends inside a {{ ... }} block ($_open left open), so a runtime added at its end would be rendered only sometimes; close the block with {{ end }}, then run again"
}

# How many template actions that take an {{ end }} are still open at the end of FILE.
template_depth() {
    grep -o '{{-\{0,1\} *[a-z]*' "$1" | sed 's/^{{-\{0,1\} *//' |
        awk '/^(if|range|with|define|block)$/ { d++ } /^end$/ { d-- } END { print d + 0 }'
}

# The config containerd will read after the restart, checked before it: the
# one generated last without this program's block, the block appended (as
# rendering the template with the block at its end does). Needs the
# containerd binary; without it, the restart's checks alone decide: TMP PLUGIN RUNTIME.
check_rendered() {
    mkdir -p "$1/rendered"
    strip_block "$CONTAINERD_EFFECTIVE" > "$1/rendered/config.toml"
    append_runtime_block "$1/rendered/config.toml" "$2" "$3" "$runsc_toml" ""
    if have containerd; then
        check_merged "$1/rendered" "$3" "$runsc_toml"
    else
        log "no containerd binary to check the rendered config with; the restart checks it"
    fi
    # (k3s serves on its own socket whatever the rendered file says.)
    CONTAINERD_ADDRESS=$RANCHER_SOCKET
}

# The config the service generated holds this program's runtime (its ConfigPath).
rendered_has_block() {
    grep -Eq "ConfigPath = [\"']${runsc_toml}[\"']" "$CONTAINERD_EFFECTIVE" 2>/dev/null
}

# Takes this program's block out of a template; one this program created
# that holds nothing else goes.
take_out_template_block() {
    _take_tmp=$(make_scratch)
    strip_block "$1" > "$_take_tmp/template"
    if [ -e "$BACKUP_DIR$1.absent" ] && [ "$(grep -v '^[[:space:]]*$' "$_take_tmp/template")" = "$BASE_LINE" ]; then
        rm -f "$1"
    else
        replace_file "$_take_tmp/template" "$1"
    fi
}
