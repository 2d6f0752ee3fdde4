# shellcheck shell=sh
# The Docker steps: runtime RUNTIME in daemon.json, and its removal.

docker_up() { timeout 10 docker info >/dev/null 2>&1; }

# After a restart with runtime RUNTIME: 0, or the part that failed (see restart_engine).
docker_ready() {
    wait_for Docker 60 docker_up || return 2
    wait_for "runtime $1 in Docker" 10 docker_runtime_registered "$1" || return 4
}

# What failed: RUNTIME PART (see restart_engine).
docker_failure() {
    if [ "$2" = 2 ]; then
        echo "Docker restarted with runtime $1 but did not answer 'docker info' within 60s"
    else
        echo "Docker restarted but does not list runtime $1"
    fi
}

docker_runtime_registered() {
    docker info --format '{{json .Runtimes}}' 2>/dev/null | grep -q "\"$1\""
}

# Sets `"default-runtime": NAME` in JSON that `runsc install` just wrote. That
# writer puts each top-level key on its own line, four spaces in, so a line
# edit is exact: FILE NAME.
set_default_runtime() {
    if grep -q '^    "default-runtime":' "$1"; then
        sed -i "s/^    \"default-runtime\": \"[^\"]*\"/    \"default-runtime\": \"$2\"/" "$1"
    else
        sed -i "1s/^{\$/{\n    \"default-runtime\": \"$2\",/" "$1"
    fi
}

# Writes into TMP/daemon.json the owner's daemon.json with runtime RUNTIME
# added: TMP RUNTIME DEFAULT_RUNTIME PREFIX [RUNSC FLAGS...].
new_daemon_json() {
    _dj_tmp=$1 _dj_runtime=$2 _dj_default=$3 _dj_prefix=$4
    shift 4
    [ -f "$DAEMON_JSON" ] && cp -p "$DAEMON_JSON" "$_dj_tmp/daemon.json"
    # runsc merges runtimes.<name> and keeps every other key (it rejects bad JSON).
    if ! "$_dj_prefix/runsc" install --config_file "$_dj_tmp/daemon.json" --runtime "$_dj_runtime" --clobber -- "$@" \
        >/dev/null 2>"$_dj_tmp/err" || grep -q '^panic:' "$_dj_tmp/err"; then
        # runsc panics (and exits 0) when "runtimes" is not a JSON object.
        grep -q '^panic: interface conversion' "$_dj_tmp/err" &&
            die "$DAEMON_JSON: \"runtimes\" must be an object of runtime definitions, e.g. {\"runc\": {\"path\": \"runc\"}}; fix it, nothing was changed"
        die "cannot update $DAEMON_JSON: $(first_reason "$_dj_tmp/err"); nothing was changed"
    fi
    [ "$_dj_default" != true ] || set_default_runtime "$_dj_tmp/daemon.json" "$_dj_runtime"
}

# RUNTIME DEFAULT_RUNTIME PREFIX [RUNSC FLAGS...]
cmd_docker_configure() {
    runtime=$1 default_runtime=$2 prefix=$3
    shift 3
    if ! have dockerd; then
        log "Docker is not installed; skipping"
        fact docker skipped
        return 0
    fi
    begin_step
    drop_leftovers "$DAEMON_JSON"
    # As for containerd: a flag this runsc does not know fails every container.
    # shellcheck disable=SC2046 # flag names are single words
    check_runsc_flags "$prefix/runsc" $(printf '%s\n' "$@" | sed -n 's/^--\([^=]*\).*/\1/p')
    tmp=$(make_scratch)
    new_daemon_json "$tmp" "$runtime" "$default_runtime" "$prefix" "$@"
    if [ -f "$DAEMON_JSON" ] && cmp -s "$tmp/daemon.json" "$DAEMON_JSON" && ! restart_pending "$DAEMON_JSON" &&
        docker_runtime_registered "$runtime"; then
        log "$DAEMON_JSON already has runtime $runtime"
        fact docker unchanged
        return 0
    fi
    if dockerd --help 2>&1 | grep -q -- '--validate'; then
        dockerd --validate --config-file "$tmp/daemon.json" >/dev/null 2>"$tmp/err" ||
            die "Docker rejects the new daemon.json: $(cat "$tmp/err"); nothing was changed"
    fi
    apply_configs docker "$runtime" "runtime $runtime$(runtime_args "$@")" "$tmp/daemon.json" "$DAEMON_JSON" docker:written
    fact docker configured
}

runtime_args() {
    # Arguments after the fixed ones are runsc flags, passed through unchanged.
    for a in "$@"; do printf ' %s' "$a"; done
}

# RUNTIME PREFIX
cmd_docker_restore() {
    begin_step
    drop_leftovers "$DAEMON_JSON"
    has_backup "$DAEMON_JSON" || { fact docker untouched; return 0; }
    restore_config docker docker-restore "$DAEMON_JSON" take_out_docker_runtime "$1" "$2"
    restart_restored docker "$DAEMON_JSON"
    forget "$DAEMON_JSON"
    fact docker restored
}

# Takes runtime RUNTIME (and a default-runtime naming it) out of FILE, keeping
# the owner's edits: FILE RUNTIME PREFIX.
take_out_docker_runtime() {
    "$3/runsc" uninstall --config_file "$1" --runtime "$2" >/dev/null 2>&1 ||
        log "could not remove runtime $2 from $1"
    sed -i "/^    \"default-runtime\": \"$2\",\{0,1\}\$/d" "$1"
}
