#!/bin/sh
# gVisor host agent: sent on stdin by the GvisorHost component and run as
#   sh -s -- <subcommand> [args...]
# Every subcommand is idempotent. Facts go to stdout as key=value lines (the
# component parses them); progress and errors go to stderr. Nothing is changed
# on the host until every check that can run first has passed.
set -eu

STATE_DIR=${GVISOR_FLEET_STATE_DIR:-/var/lib/gvisor-fleet}
BACKUP_DIR="$STATE_DIR/backup"
DAEMON_JSON=${GVISOR_FLEET_DAEMON_JSON:-/etc/docker/daemon.json}
CONTAINERD_CONFIG=${GVISOR_FLEET_CONTAINERD_CONFIG:-/etc/containerd/config.toml}
CTR_NAMESPACE=gvisor-fleet
# A sandbox that never starts must fail the step, not hang `pulumi up`.
VERIFY_TIMEOUT=${GVISOR_FLEET_VERIFY_TIMEOUT:-300}
BLOCK_BEGIN="# BEGIN gvisor-fleet runtime (managed; removed on destroy)"
BLOCK_END="# END gvisor-fleet runtime"

log() { printf 'gvisor-host: %s\n' "$*" >&2; }
die() { printf 'gvisor-host: ERROR: %s\n' "$*" >&2; exit 1; }
fact() { printf '%s=%s\n' "$1" "$2"; }
have() { command -v "$1" >/dev/null 2>&1; }

# --- small helpers -----------------------------------------------------------

# Keeps the first copy of a file we are about to change, so destroy can put
# back exactly what was there. A later run never overwrites it.
backup_once() {
    target=$1
    saved="$BACKUP_DIR$target"
    [ -e "$saved" ] || [ -e "$saved.absent" ] && return 0
    mkdir -p "$(dirname "$saved")"
    if [ -e "$target" ]; then
        cp -p "$target" "$saved"
    else
        : > "$saved.absent"
    fi
}

# Puts back the first copy taken by backup_once and forgets it.
restore_backup() {
    target=$1
    saved="$BACKUP_DIR$target"
    if [ -e "$saved" ]; then
        cp -p "$saved" "$target.gvisor-fleet.tmp"
        mv -f "$target.gvisor-fleet.tmp" "$target"
        rm -f "$saved"
    elif [ -e "$saved.absent" ]; then
        rm -f "$target" "$saved.absent"
    fi
}

has_backup() { [ -e "$BACKUP_DIR$1" ] || [ -e "$BACKUP_DIR$1.absent" ]; }

sha512_of() { sha512sum "$1" | cut -d' ' -f1; }

# Replaces a file atomically with the contents of another (same filesystem).
replace_file() {
    src=$1 dst=$2
    mkdir -p "$(dirname "$dst")"
    cp "$src" "$dst.gvisor-fleet.tmp"
    if [ -e "$dst" ]; then
        chmod --reference="$dst" "$dst.gvisor-fleet.tmp" 2>/dev/null || true
    fi
    mv -f "$dst.gvisor-fleet.tmp" "$dst"
}

# POSIX sh has no local variables: helpers use names no caller uses.
fetch() {
    _fetch_url=$1 _fetch_dest=$2
    if have curl; then
        curl -fsSL --retry 3 --connect-timeout 20 -o "$_fetch_dest" "$_fetch_url"
    elif have wget; then
        wget -q -T 20 -t 3 -O "$_fetch_dest" "$_fetch_url"
    else
        die "neither curl nor wget is installed; install one of them to download gVisor"
    fi
}

# How this host restarts services: systemd, or an init with `service`.
service_manager() {
    if [ -d /run/systemd/system ] && have systemctl; then
        echo systemd
    elif have service; then
        echo service
    else
        return 1
    fi
}

service_restart() {
    svc=$1
    case $(service_manager) in
        systemd) systemctl restart "$svc" ;;
        service) service "$svc" restart ;;
        # Fail, not exit: the caller still has its previous config to put back.
        *) log "cannot restart $svc: no systemd and no 'service' command on this host" && return 1 ;;
    esac
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

runtime_args() {
    # Arguments after the fixed ones are runsc flags, passed through unchanged.
    for a in "$@"; do printf ' %s' "$a"; done
}

# --- preflight ---------------------------------------------------------------

cgroup_version() {
    if [ "$(stat -fc %T /sys/fs/cgroup 2>/dev/null)" = cgroup2fs ]; then
        echo 2
    else
        echo 1
    fi
}

# Permission bits are not enough: a device cgroup (containers) or a nodev
# mount refuses the read-write open runsc's KVM platform needs; try it.
kvm_usable() {
    [ -c /dev/kvm ] && (: <>/dev/kvm) 2>/dev/null && echo yes || echo no
}

containerd_version() {
    have containerd || return 0
    containerd --version 2>/dev/null | awk '{print $3}' | sed 's/^v//'
}

docker_version() {
    have dockerd || return 0
    dockerd --version 2>/dev/null | sed -n 's/^Docker version \([^,]*\).*/\1/p'
}

cmd_preflight() {
    expected_arch=$1 platform=$2 docker_mode=$3 containerd_mode=$4
    [ "$(id -u)" = 0 ] || die "must run as root (set the machine's user to root or give it passwordless sudo)"
    arch=$(uname -m)
    kernel=$(uname -r)
    fact arch "$arch"
    fact kernel "$kernel"
    fact page_size "$(getconf PAGESIZE 2>/dev/null || echo unknown)"
    cgv=$(cgroup_version)
    fact cgroup_version "$cgv"
    if [ -d /run/systemd/system ]; then fact init systemd; else fact init other; fi
    fact kvm "$(kvm_usable)"
    dv=$(docker_version)
    cv=$(containerd_version)
    fact docker_version "${dv:-absent}"
    fact containerd_version "${cv:-absent}"

    case $arch in
        x86_64 | aarch64) ;;
        *) die "unsupported architecture '$arch': gVisor runs on x86_64 and aarch64 only" ;;
    esac
    if [ "$expected_arch" != detect ] && [ "$expected_arch" != "$arch" ]; then
        die "machine reports architecture '$arch' but the stack asked for '$expected_arch'; fix the machine's 'arch' setting"
    fi
    major=${kernel%%.*}
    rest=${kernel#*.}
    minor=${rest%%[!0-9]*}
    if [ "$major" -lt 4 ] || { [ "$major" -eq 4 ] && [ "$minor" -lt 14 ]; }; then
        die "kernel $kernel is too old for gVisor's systrap platform (needs 4.14 or newer)"
    fi
    if [ "$platform" = kvm ] && [ "$(kvm_usable)" = no ]; then
        die "platform 'kvm' needs a read-write /dev/kvm, which this machine lacks; set gvisor-fleet:platform to systrap"
    fi
    if [ "$docker_mode" = required ] && [ -z "$dv" ]; then
        die "Docker is required (gvisor-fleet:docker=required) but dockerd is not installed"
    fi
    if [ "$containerd_mode" = required ] && [ -z "$cv" ]; then
        die "containerd is required (gvisor-fleet:containerd=required) but it is not installed"
    fi
    if { [ "$docker_mode" != off ] && [ -n "$dv" ]; } || { [ "$containerd_mode" != off ] && [ -n "$cv" ]; }; then
        service_manager >/dev/null ||
            die "this host has neither systemd nor a 'service' command, so Docker and containerd cannot be restarted with gVisor; install one, or set gvisor-fleet:docker and gvisor-fleet:containerd to off"
    fi
    for tool in sha512sum tar mktemp; do
        have "$tool" || die "'$tool' is missing on this host; install coreutils/tar"
    done
    have curl || have wget || die "neither curl nor wget is installed; install one of them"
}

# --- install -----------------------------------------------------------------

# Fetches the release's checksum files and prints the layout found:
# "archive" (gvisor.tar.bz2, releases since 2026-08) or "loose" (older).
detect_layout() {
    url=$1 dir=$2
    # The probes below hide fetch's errors; without a downloader say so here.
    have curl || have wget || die "neither curl nor wget is installed; install one of them to download gVisor"
    if fetch "$url/gvisor.tar.bz2.sha512" "$dir/gvisor.tar.bz2.sha512" 2>/dev/null; then
        echo archive
    elif fetch "$url/runsc.sha512" "$dir/runsc.sha512" 2>/dev/null; then
        echo loose
    else
        die "gVisor release not found at $url/ (neither gvisor.tar.bz2.sha512 nor runsc.sha512); check gvisor-fleet:release and gvisor-fleet:baseUrl"
    fi
}

# Downloads and checks the release into $dir/stage (runsc, shim, gvisor-bin/).
download_release() {
    url=$1 dir=$2 layout=$3 pinned_sha=$4
    mkdir -p "$dir/stage"
    if [ "$layout" = archive ]; then
        files=gvisor.tar.bz2
    else
        files=runsc
        # Releases before 2019 published no shim; containerd then cannot use gVisor.
        if fetch "$url/containerd-shim-runsc-v1.sha512" "$dir/containerd-shim-runsc-v1.sha512" 2>/dev/null; then
            files="runsc containerd-shim-runsc-v1"
        else
            log "$url has no containerd-shim-runsc-v1; containerd will not be able to run gVisor"
        fi
    fi
    first=${files%% *}
    if [ "$pinned_sha" != - ]; then
        published=$(cut -d' ' -f1 "$dir/$first.sha512")
        [ "$published" = "$pinned_sha" ] ||
            die "$url/$first.sha512 says $published, but gvisor-fleet:sha512 pins $pinned_sha; nothing was installed"
    fi
    for f in $files; do
        log "downloading $url/$f"
        fetch "$url/$f" "$dir/$f" || die "download failed: $url/$f"
        (cd "$dir" && sha512sum -c "$f.sha512" >/dev/null 2>&1) ||
            die "checksum mismatch for $url/$f (expected $(cut -d' ' -f1 "$dir/$f.sha512")); nothing was installed"
    done
    if [ "$layout" = archive ]; then
        tar -xjf "$dir/gvisor.tar.bz2" -C "$dir/stage"
    else
        for f in $files; do mv "$dir/$f" "$dir/stage/"; done
    fi
    [ -f "$dir/stage/runsc" ] || die "$url/gvisor.tar.bz2 holds no runsc"
    chmod 0755 "$dir/stage/runsc"
    [ -f "$dir/stage/containerd-shim-runsc-v1" ] && chmod 0755 "$dir/stage/containerd-shim-runsc-v1"
    "$dir/stage/runsc" --version >/dev/null 2>&1 ||
        die "the downloaded runsc does not run on this machine ($(uname -m)); check the mirror's $(uname -m) directory"
}

cmd_install() {
    base_url=$1 release=$2 prefix=$3 pinned_sha=$4
    arch=$(uname -m)
    url="$base_url/$release/$arch"
    mkdir -p "$STATE_DIR" "$prefix"
    state="$STATE_DIR/install.state"
    tmp=$(mktemp -d "$prefix/.gvisor-fleet.XXXXXX")
    trap 'rm -rf "$tmp"' EXIT
    layout=$(detect_layout "$url" "$tmp")
    if [ "$layout" = archive ]; then sumfile=gvisor.tar.bz2.sha512; else sumfile=runsc.sha512; fi
    published=$(cut -d' ' -f1 "$tmp/$sumfile")

    # Same release already installed and untouched: download nothing.
    if [ -f "$state" ] && [ -x "$prefix/runsc" ] &&
        grep -qx "url=$url" "$state" && grep -qx "published=$published" "$state" &&
        grep -qx "runsc=$(sha512_of "$prefix/runsc")" "$state"; then
        log "release $release already installed from $url"
        fact changed false
    else
        download_release "$url" "$tmp" "$layout" "$pinned_sha"
        for f in runsc containerd-shim-runsc-v1 gvisor-bin; do
            if [ -e "$prefix/$f" ] && ! [ -f "$state" ]; then
                backup_once "$prefix/$f"
            fi
        done
        if [ -d "$tmp/stage/gvisor-bin" ]; then
            rm -rf "$prefix/gvisor-bin.old"
            [ -d "$prefix/gvisor-bin" ] && mv "$prefix/gvisor-bin" "$prefix/gvisor-bin.old"
            mv "$tmp/stage/gvisor-bin" "$prefix/gvisor-bin"
            rm -rf "$prefix/gvisor-bin.old"
        fi
        if [ -f "$tmp/stage/containerd-shim-runsc-v1" ]; then
            mv -f "$tmp/stage/containerd-shim-runsc-v1" "$prefix/containerd-shim-runsc-v1"
        elif [ -f "$state" ]; then
            rm -f "$prefix/containerd-shim-runsc-v1" # ours, from another release
        fi
        mv -f "$tmp/stage/runsc" "$prefix/runsc"
        {
            echo "url=$url"
            echo "release=$release"
            echo "layout=$layout"
            echo "published=$published"
            echo "runsc=$(sha512_of "$prefix/runsc")"
            echo "prefix=$prefix"
        } > "$state.tmp"
        mv -f "$state.tmp" "$state"
        log "installed gVisor $release ($layout layout) into $prefix"
        fact changed true
    fi
    fact release "$release"
    fact layout "$layout"
    fact runsc_path "$prefix/runsc"
    fact runsc_version "$("$prefix/runsc" --version 2>/dev/null | head -n 1 | sed 's/^runsc version //')"
    if [ -x "$prefix/containerd-shim-runsc-v1" ]; then fact shim yes; else fact shim no; fi
}

cmd_uninstall() {
    prefix=$1
    state="$STATE_DIR/install.state"
    if [ -f "$state" ]; then
        rm -rf "$prefix/runsc" "$prefix/containerd-shim-runsc-v1" "$prefix/gvisor-bin"
        rm -f "$state"
    fi
    for f in runsc containerd-shim-runsc-v1 gvisor-bin; do
        has_backup "$prefix/$f" && restore_backup "$prefix/$f"
    done
    log "gVisor removed from $prefix"
}

# --- runsc flag check --------------------------------------------------------

# Every [runsc_config] key must be a flag the installed runsc accepts, or
# every container creation fails ("flag provided but not defined").
check_runsc_flags() {
    runsc=$1 toml=$2
    known=$("$runsc" flags 2>&1 | sed -n 's/^ *-\([A-Za-z0-9_.-]*\).*/\1/p')
    keys=$(sed -n '/^\[runsc_config\]/,/^\[/s/^ *\([A-Za-z0-9_.-]*\) *=.*/\1/p' "$toml")
    for k in $keys; do
        printf '%s\n' "$known" | grep -qx -- "$k" ||
            die "runsc $("$runsc" --version 2>/dev/null | head -n 1 | sed 's/^runsc version //') has no flag '$k' (from gvisor-fleet:runscFlags or platform/network settings); remove it or pin a release that has it"
    done
}

# --- Docker ------------------------------------------------------------------

docker_runtime_registered() {
    docker info --format '{{json .Runtimes}}' 2>/dev/null | grep -q "\"$1\""
}

# Sets `"default-runtime": NAME` in JSON that `runsc install` just wrote. That
# writer puts each top-level key on its own line, four spaces in, so a line
# edit is exact.
set_default_runtime() {
    file=$1 name=$2
    if grep -q '^    "default-runtime":' "$file"; then
        sed -i "s/^    \"default-runtime\": \"[^\"]*\"/    \"default-runtime\": \"$name\"/" "$file"
    else
        sed -i "1s/^{\$/{\n    \"default-runtime\": \"$name\",/" "$file"
    fi
}

cmd_docker_configure() {
    runtime=$1 default_runtime=$2 prefix=$3
    shift 3
    if ! have dockerd; then
        log "Docker is not installed; skipping"
        fact docker skipped
        return 0
    fi
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    [ -f "$DAEMON_JSON" ] && cp -p "$DAEMON_JSON" "$tmp/daemon.json"
    # runsc merges runtimes.<name> and keeps every other key (it rejects bad JSON).
    "$prefix/runsc" install --config_file "$tmp/daemon.json" --runtime "$runtime" --clobber -- "$@" >/dev/null 2>"$tmp/err" ||
        die "cannot update $DAEMON_JSON: $(cat "$tmp/err")"
    [ "$default_runtime" = true ] && set_default_runtime "$tmp/daemon.json" "$runtime"

    if [ -f "$DAEMON_JSON" ] && cmp -s "$tmp/daemon.json" "$DAEMON_JSON" && docker_runtime_registered "$runtime"; then
        log "$DAEMON_JSON already has runtime $runtime"
        fact docker unchanged
        return 0
    fi
    if dockerd --help 2>&1 | grep -q -- '--validate'; then
        dockerd --validate --config-file "$tmp/daemon.json" >/dev/null 2>"$tmp/err" ||
            die "Docker rejects the new daemon.json: $(cat "$tmp/err"); nothing was changed"
    fi
    backup_once "$DAEMON_JSON"
    [ -f "$DAEMON_JSON" ] && cp -p "$DAEMON_JSON" "$tmp/previous.json"
    replace_file "$tmp/daemon.json" "$DAEMON_JSON"
    if service_restart docker && wait_for "Docker" 60 docker_runtime_registered "$runtime"; then
        sha512_of "$DAEMON_JSON" > "$STATE_DIR/daemon.json.written"
        log "Docker restarted with runtime $runtime$(runtime_args "$@")"
        fact docker configured
        return 0
    fi
    log "Docker did not come back with runtime $runtime; restoring the previous daemon.json"
    if [ -f "$tmp/previous.json" ]; then replace_file "$tmp/previous.json" "$DAEMON_JSON"; else rm -f "$DAEMON_JSON"; fi
    service_restart docker || true
    die "Docker failed to start with runtime $runtime; previous $DAEMON_JSON restored"
}

cmd_docker_restore() {
    runtime=$1 prefix=$2
    has_backup "$DAEMON_JSON" || { fact docker untouched; return 0; }
    written="$STATE_DIR/daemon.json.written"
    if [ ! -f "$DAEMON_JSON" ] || { [ -f "$written" ] && [ "$(sha512_of "$DAEMON_JSON")" = "$(cat "$written")" ]; }; then
        restore_backup "$DAEMON_JSON"
        log "restored $DAEMON_JSON as it was before install"
    else
        # Edited since we wrote it: take out only our runtime, keep the edits.
        "$prefix/runsc" uninstall --config_file "$DAEMON_JSON" --runtime "$runtime" >/dev/null 2>&1 ||
            log "could not remove runtime $runtime from $DAEMON_JSON"
        sed -i "/^    \"default-runtime\": \"$runtime\",\{0,1\}\$/d" "$DAEMON_JSON"
        rm -f "$BACKUP_DIR$DAEMON_JSON" "$BACKUP_DIR$DAEMON_JSON.absent"
        log "$DAEMON_JSON changed since install: removed runtime $runtime only"
    fi
    rm -f "$written"
    if docker info >/dev/null 2>&1; then service_restart docker || log "Docker restart failed after restore"; fi
    fact docker restored
}

# --- containerd --------------------------------------------------------------

# Prints "<config version> <CRI runtime plugin id>" for a containerd major
# version and the `version = N` of an existing config (or "none").
# containerd 2.x reads v2 files through migration; writing a v3 table into a v2
# file (or the reverse) is silently ignored (gvisor#13985).
containerd_plan() {
    major=$1 file_version=$2
    case $file_version in
        none) if [ "$major" -ge 2 ]; then file_version=3; else file_version=2; fi ;;
    esac
    case $file_version in
        2) echo "2 io.containerd.grpc.v1.cri" ;;
        3 | 4)
            [ "$major" -ge 2 ] || die "$CONTAINERD_CONFIG says version = $file_version, which containerd $major.x cannot read"
            echo "$file_version io.containerd.cri.v1.runtime"
            ;;
        1) die "$CONTAINERD_CONFIG is a version 1 config; migrate it first: containerd config migrate > new.toml" ;;
        *) die "$CONTAINERD_CONFIG has an unknown 'version = $file_version'" ;;
    esac
}

config_file_version() {
    if [ -f "$1" ]; then
        v=$(sed -n 's/^version *= *\([0-9][0-9]*\).*/\1/p' "$1" | head -n 1)
        echo "${v:-1}"
    else
        echo none
    fi
}

strip_managed_block() {
    sed "/^$BLOCK_BEGIN\$/,/^$BLOCK_END\$/d" "$1"
}

# Docker CE's containerd package ships a version 1 config whose only setting
# is disabled_plugins = ["cri"], so Kubernetes cannot use containerd at all.
# That file (comments aside) becomes version 2 with CRI enabled; any other
# version 1 file needs a real migration, which only its owner can review.
upgrade_docker_default_config() {
    if grep -v '^[[:space:]]*#' "$1" | grep -v '^[[:space:]]*$' | grep -qv '^disabled_plugins'; then
        return 1
    fi
    echo "version = 2"
    grep -v '^disabled_plugins' "$1"
}

# Drops CRI from disabled_plugins (version 2+ files name plugins by full id).
enable_cri() {
    sed -i '/^disabled_plugins/{s/"[^"]*cri[^"]*"//g; s/\[[ ,]*/[/; s/[ ,]*\]/]/; s/,[ ,]*,[ ]*/, /g}' "$1"
}

default_runtime() {
    sed -n "s/^ *default_runtime_name = [\"']\\([^\"']*\\)[\"'].*/\\1/p" "$1" | head -n 1
}

# CRI serves unless the config disables it; we never do, so it must be "ok".
cri_ok() { [ "$(cri_status)" = ok ]; }

cri_status() {
    timeout 10 ctr --connect-timeout 2s plugins ls 2>/dev/null | awk '$2 == "cri" { print $4 }'
}

# ctr waits for a socket that may never answer; bound each probe.
containerd_serving() { timeout 10 ctr --connect-timeout 2s version >/dev/null 2>&1; }

cmd_containerd_plan() {
    containerd_plan "$1" "$2"
}

cmd_containerd_configure() {
    runtime=$1 runsc_toml_b64=$2 prefix=$3 runsc_toml=$4
    if ! have containerd; then
        log "containerd is not installed; skipping"
        fact containerd skipped
        return 0
    fi
    cv=$(containerd_version)
    major=${cv%%.*}
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    file_version=$(config_file_version "$CONTAINERD_CONFIG")
    if [ "$file_version" != none ]; then
        strip_managed_block "$CONTAINERD_CONFIG" > "$tmp/config.toml"
    fi
    if [ "$file_version" = 1 ] && upgrade_docker_default_config "$tmp/config.toml" > "$tmp/upgraded.toml"; then
        log "$CONTAINERD_CONFIG is Docker's default (version 1, CRI disabled): rewriting it as version 2"
        mv "$tmp/upgraded.toml" "$tmp/config.toml"
        file_version=2
    fi
    plan=$(containerd_plan "$major" "$file_version") || exit 1
    version=${plan%% *} plugin=${plan#* }
    table="plugins.\"$plugin\".containerd.runtimes.$runtime"

    [ -x "$prefix/containerd-shim-runsc-v1" ] || have containerd-shim-runsc-v1 ||
        die "containerd-shim-runsc-v1 is not installed (release $(sed -n 's/^release=//p' "$STATE_DIR/install.state" 2>/dev/null) has none); pin a release that ships it or set gvisor-fleet:containerd to off"
    printf '%s' "$runsc_toml_b64" | base64 -d > "$tmp/runsc.toml" || die "cannot decode runsc.toml"
    check_runsc_flags "$prefix/runsc" "$tmp/runsc.toml"

    [ "$file_version" != none ] || echo "version = $version" > "$tmp/config.toml"
    if grep -Eq "^ *\[plugins\.[\"']${plugin}[\"']\.containerd\.runtimes\.$runtime(\.options)?\]" "$tmp/config.toml"; then
        die "$CONTAINERD_CONFIG already defines [$table] outside this program's block; remove it or set gvisor-fleet:runtimeName to another name"
    fi
    if grep -q '^disabled_plugins.*cri' "$tmp/config.toml"; then
        log "enabling the CRI plugin (it was listed in disabled_plugins)"
        enable_cri "$tmp/config.toml"
    fi
    # A file that names no runtime relies on containerd's built-in default
    # (runc); naming ours replaces the built-in map, and CRI then fails with
    # "no corresponding runtime configured ... default_runtime_name". Keep it.
    keep_default=""
    if ! grep -Eq "^ *\[plugins\.[\"']${plugin}[\"']\.containerd\.runtimes\." "$tmp/config.toml"; then
        containerd --config "$tmp/config.toml" config dump > "$tmp/before.toml" 2>"$tmp/err" ||
            die "containerd rejects $CONTAINERD_CONFIG as it is: $(tail -n 3 "$tmp/err"); fix it first"
        keep_default=$(default_runtime "$tmp/before.toml")
        keep_type=$(sed -n "/runtimes\.$keep_default\]/,/runtime_type/s/^ *runtime_type = //p" "$tmp/before.toml" | head -n 1)
    fi

    # The block starts on a line of its own, without adding a blank line each run.
    [ -z "$(tail -c 1 "$tmp/config.toml")" ] || echo >> "$tmp/config.toml"
    {
        echo "$BLOCK_BEGIN"
        if [ -n "$keep_default" ] && [ -n "$keep_type" ]; then
            echo "[plugins.\"$plugin\".containerd.runtimes.$keep_default]"
            echo "  runtime_type = $keep_type"
        fi
        echo "[$table]"
        echo "  runtime_type = \"io.containerd.runsc.v1\""
        echo "[$table.options]"
        echo "  TypeUrl = \"io.containerd.runsc.v1.options\""
        echo "  ConfigPath = \"$runsc_toml\""
        echo "$BLOCK_END"
    } >> "$tmp/config.toml"

    # Validate the merged file before it takes effect: it must parse, and the
    # runtime must survive imports (on 1.x an imported CRI table replaces ours).
    containerd --config "$tmp/config.toml" config dump > "$tmp/dump.toml" 2>"$tmp/err" ||
        die "containerd rejects the merged config: $(tail -n 3 "$tmp/err"); nothing was changed"
    grep -Eq "ConfigPath = [\"']${runsc_toml}[\"']" "$tmp/dump.toml" ||
        die "after merging, containerd's effective config has no runtime '$runtime': an imported file (imports = [...]) probably redefines the CRI plugin table and replaces it; move the CRI settings into $CONTAINERD_CONFIG. Nothing was changed"
    default_rt=$(default_runtime "$tmp/dump.toml")
    [ -z "$default_rt" ] || grep -Fq "runtimes.$default_rt]" "$tmp/dump.toml" ||
        die "after merging, containerd's default runtime '$default_rt' has no runtime table; CRI would fail. Nothing was changed"

    if [ -f "$CONTAINERD_CONFIG" ] && cmp -s "$tmp/config.toml" "$CONTAINERD_CONFIG" &&
        [ -f "$runsc_toml" ] && cmp -s "$tmp/runsc.toml" "$runsc_toml" && containerd_serving; then
        log "containerd already configured with runtime $runtime"
        fact containerd unchanged
        fact containerd_config_version "$version"
        return 0
    fi

    backup_once "$CONTAINERD_CONFIG"
    backup_once "$runsc_toml"
    [ -f "$CONTAINERD_CONFIG" ] && cp -p "$CONTAINERD_CONFIG" "$tmp/previous-config.toml"
    [ -f "$runsc_toml" ] && cp -p "$runsc_toml" "$tmp/previous-runsc.toml"
    replace_file "$tmp/runsc.toml" "$runsc_toml"
    replace_file "$tmp/config.toml" "$CONTAINERD_CONFIG"
    if service_restart containerd && wait_for containerd 30 containerd_serving &&
        wait_for "containerd's CRI plugin" 10 cri_ok; then
        sha512_of "$CONTAINERD_CONFIG" > "$STATE_DIR/config.toml.written"
        log "containerd restarted with runtime $runtime (config version $version, $plugin)"
        fact containerd configured
        fact containerd_config_version "$version"
        return 0
    fi
    log "containerd did not come back; restoring the previous configuration"
    if [ -f "$tmp/previous-config.toml" ]; then replace_file "$tmp/previous-config.toml" "$CONTAINERD_CONFIG"; else rm -f "$CONTAINERD_CONFIG"; fi
    if [ -f "$tmp/previous-runsc.toml" ]; then replace_file "$tmp/previous-runsc.toml" "$runsc_toml"; else rm -f "$runsc_toml"; fi
    if service_restart containerd; then wait_for containerd 30 containerd_serving || true; fi
    die "containerd failed to start with runtime $runtime; previous configuration restored"
}

cmd_containerd_restore() {
    runsc_toml=$1
    has_backup "$CONTAINERD_CONFIG" || has_backup "$runsc_toml" || { fact containerd untouched; return 0; }
    written="$STATE_DIR/config.toml.written"
    if [ ! -f "$CONTAINERD_CONFIG" ] || { [ -f "$written" ] && [ "$(sha512_of "$CONTAINERD_CONFIG")" = "$(cat "$written")" ]; }; then
        restore_backup "$CONTAINERD_CONFIG"
        log "restored $CONTAINERD_CONFIG as it was before install"
    else
        # Edited since we wrote it: take out only our block, keep the edits.
        strip_managed_block "$CONTAINERD_CONFIG" > "$CONTAINERD_CONFIG.gvisor-fleet.new"
        mv -f "$CONTAINERD_CONFIG.gvisor-fleet.new" "$CONTAINERD_CONFIG"
        rm -f "$BACKUP_DIR$CONTAINERD_CONFIG" "$BACKUP_DIR$CONTAINERD_CONFIG.absent"
        log "$CONTAINERD_CONFIG changed since install: removed the runtime block only"
    fi
    restore_backup "$runsc_toml"
    rm -f "$written"
    if containerd_serving; then
        service_restart containerd || log "containerd restart failed after restore"
        wait_for containerd 30 containerd_serving || log "containerd is not serving after restore"
    fi
    fact containerd restored
}

# --- verify ------------------------------------------------------------------

# One sandbox answers all three questions: its kernel release, the first line
# of its boot log, and whether the host's kernel symbols are visible.
PROBE='uname -r; dmesg 2>/dev/null | head -n 1; if cat /proc/kallsyms >/dev/null 2>&1; then echo kallsyms-readable; else echo kallsyms-absent; fi'

report_probe() {
    label=$1 out=$2 host_kernel=$3
    sandbox_kernel=$(sed -n 1p "$out")
    banner=$(sed -n 2p "$out")
    kallsyms=$(sed -n 3p "$out")
    fact "${label}_sandbox_kernel" "$sandbox_kernel"
    fact "${label}_banner" "$banner"
    fact "${label}_kallsyms" "${kallsyms#kallsyms-}"
    ok=true
    [ -n "$sandbox_kernel" ] && [ "$sandbox_kernel" != "$host_kernel" ] || ok=false
    case $banner in *"Starting gVisor"*) ;; *) ok=false ;; esac
    [ "$kallsyms" = kallsyms-absent ] || ok=false
    fact "${label}_ok" "$ok"
    [ "$ok" = true ]
}

ensure_ctr_image() {
    image=$1
    ctr -n "$CTR_NAMESPACE" images ls -q 2>/dev/null | grep -qx -- "$image" && return 0
    if have docker && docker image inspect "$image" >/dev/null 2>&1; then
        docker save "$image" | ctr -n "$CTR_NAMESPACE" images import - >/dev/null
    else
        ctr -n "$CTR_NAMESPACE" images pull "$image" >/dev/null
    fi
}

cmd_verify() {
    runtime=$1 image=$2 docker_mode=$3 containerd_mode=$4 prefix=$5 runsc_toml=$6
    host_kernel=$(uname -r)
    fact host_kernel "$host_kernel"
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    failed=""
    # runsc itself, no container engine or image needed: the host's own
    # file system, read-only, inside a sandbox.
    if timeout "$VERIFY_TIMEOUT" "$prefix/runsc" --network=none "do" sh -c "$PROBE" > "$tmp/do.out" 2>"$tmp/do.err"; then
        report_probe runsc "$tmp/do.out" "$host_kernel" || failed="$failed runsc"
    else
        log "runsc do failed: $(tail -n 3 "$tmp/do.err")"
        fact runsc_ok false
        failed="$failed runsc"
    fi
    if [ "$docker_mode" != off ] && have docker; then
        if ! docker image inspect "$image" >/dev/null 2>&1; then
            docker pull -q "$image" >/dev/null 2>&1 || log "cannot pull $image for Docker"
        fi
        if timeout "$VERIFY_TIMEOUT" docker run --rm --runtime="$runtime" --network=none "$image" sh -c "$PROBE" \
            > "$tmp/docker.out" 2>"$tmp/docker.err"; then
            report_probe docker "$tmp/docker.out" "$host_kernel" || failed="$failed docker"
        else
            log "docker run --runtime=$runtime failed: $(tail -n 3 "$tmp/docker.err")"
            fact docker_ok false
            failed="$failed docker"
        fi
    else
        fact docker_ok skipped
    fi
    if [ "$containerd_mode" != off ] && have containerd && have ctr; then
        name="gvisor-fleet-verify-$$"
        # Without CRI's container-type annotation, current shims treat the task
        # as a subcontainer and wait forever on `runsc create` (gvisor#12198).
        # The trailing sleep lets the shim's `runsc wait` attach before the
        # sandbox exits; a faster probe can end with status 128.
        if ensure_ctr_image "$image" 2>"$tmp/ctr.err" &&
            timeout "$VERIFY_TIMEOUT" ctr -n "$CTR_NAMESPACE" run --rm --runtime io.containerd.runsc.v1 \
                --runtime-config-path "$runsc_toml" --annotation io.kubernetes.cri.container-type=sandbox \
                "$image" "$name" sh -c "$PROBE; sleep 1" > "$tmp/ctr.out" 2>>"$tmp/ctr.err"; then
            report_probe containerd "$tmp/ctr.out" "$host_kernel" || failed="$failed containerd"
        else
            log "ctr run --runtime io.containerd.runsc.v1 failed: $(tail -n 3 "$tmp/ctr.err")"
            # containerd 1.6 tries to dial the JSON bootstrap reply as a socket path.
            if grep -aq 'dial unix.*"protocol":"ttrpc"' "$tmp/ctr.err"; then
                log "this gVisor release's shim speaks containerd 2's shim protocol, which containerd $(containerd_version) does not; upgrade containerd or pin an older gVisor release"
            fi
            # A sandbox that never finished must not stay behind.
            ctr -n "$CTR_NAMESPACE" tasks kill -s SIGKILL "$name" >/dev/null 2>&1 || true
            ctr -n "$CTR_NAMESPACE" tasks rm -f "$name" >/dev/null 2>&1 || true
            ctr -n "$CTR_NAMESPACE" containers rm "$name" >/dev/null 2>&1 || true
            fact containerd_ok false
            failed="$failed containerd"
        fi
    else
        fact containerd_ok skipped
    fi
    [ -z "$failed" ] || die "gVisor verification failed for:$failed (see the facts above)"
}

# --- entry -------------------------------------------------------------------

usage() {
    die "usage: sh -s -- preflight|install|uninstall|docker-configure|docker-restore|containerd-plan|containerd-configure|containerd-restore|verify ARGS"
}

[ $# -ge 1 ] || usage
sub=$1
shift
case $sub in
    preflight) cmd_preflight "$@" ;;
    install) cmd_install "$@" ;;
    uninstall) cmd_uninstall "$@" ;;
    docker-configure) cmd_docker_configure "$@" ;;
    docker-restore) cmd_docker_restore "$@" ;;
    containerd-plan) cmd_containerd_plan "$@" ;;
    containerd-configure) cmd_containerd_configure "$@" ;;
    containerd-restore) cmd_containerd_restore "$@" ;;
    verify) cmd_verify "$@" ;;
    *) usage ;;
esac
