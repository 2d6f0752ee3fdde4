# shellcheck shell=sh
# The configure and restore flows both engines share. An engine (docker or
# containerd) plugs in through engine_label, engine_up and restart_engine,
# which name what differs; the journal's marks beside a config file say what
# a killed step must still finish.

engine_label() { if [ "$1" = docker ]; then echo Docker; else echo containerd; fi; }

engine_up() { if [ "$1" = docker ]; then docker_up; else containerd_serving; fi; }

# Notes once, beside FILE's first copy, whether ENGINE, which reads FILE, was
# running before FILE was put back ("restart"), so a re-run after a failed
# restart still restarts it and still fails until the engine comes back.
note_running() {
    if ! has_mark "$1" restart && engine_up "$2"; then set_mark "$1" restart; fi
}

# Notes once whether ENGINE ran before this program first wrote FILE
# ("engine-before"): destroy then owes the owner the file, not a running
# engine (one that could not start with the owner's file before).
note_engine_before() {
    [ -e "$BACKUP_DIR$1.engine-before" ] && return 0
    if engine_up "$2"; then echo up; else echo down; fi > "$BACKUP_DIR$1.engine-before"
}
was_down_before() { [ "$(cat "$BACKUP_DIR$1.engine-before" 2>/dev/null)" = down ]; }

# FILE is written but its engine has not yet restarted with it ("pending"):
# set before the write, cleared once the engine serves the new file. A step
# killed in between finds it and restarts the engine, though the file is right.
restart_pending() { has_mark "$1" pending; }

# Restarts ENGINE with runtime RUNTIME configured and checks it part by part.
# Returns 0, or the part that failed: 1 start, 2 readiness, 3 the CRI plugin,
# 4 the runtime's registration.
restart_engine() {
    service_restart "$1" || return 1
    checkpoint "$1:restarted"
    if [ "$1" = docker ]; then
        wait_for Docker 60 docker_up || return 2
        wait_for "runtime $2 in Docker" 10 docker_runtime_registered "$2" || return 4
    else
        wait_for containerd 30 containerd_serving || return 2
        wait_for "containerd's CRI plugin" 10 cri_ok || return 3
    fi
}

# What went wrong, for restart_engine's code PART: ENGINE RUNTIME PART.
failure_clause() {
    _label=$(engine_label "$1")
    case $3 in
        1) echo "$_label failed to start with runtime $2" ;;
        2) if [ "$1" = docker ]; then
               echo "Docker restarted with runtime $2 but did not answer 'docker info' within 60s"
           else
               echo "containerd restarted with runtime $2 but did not answer on ${CONTAINERD_ADDRESS:-/run/containerd/containerd.sock} within 30s"
           fi ;;
        3) echo "containerd restarted with runtime $2 but its CRI plugin did not load (status: $(cri_status || true))" ;;
        *) echo "Docker restarted but does not list runtime $2" ;;
    esac
}

# The engine's own reason for failing PART (start or cri) since MARK
# (log_mark's): ENGINE PART MARK.
engine_reason() { service_log "$1" "$3" | pick_reason "$2"; }

# Calls FUNC ARG NEW FILE POINT for each NEW FILE POINT triple after ARG.
each_file() {
    _each_fn=$1 _each_arg=$2
    shift 2
    while [ $# -ge 3 ]; do
        "$_each_fn" "$_each_arg" "$1" "$2" "$3"
        shift 3
    done
}

# The files of the NEW FILE POINT triples, comma-separated.
each_file_name() {
    _names=""
    while [ $# -ge 3 ]; do
        _names="${_names:+$_names, }$2"
        shift 3
    done
    printf '%s' "$_names"
}

# ENGINE NEW FILE POINT: FILE as it was before this run goes beside NEW.
journal_config() {
    if [ -f "$3" ]; then cp -p "$3" "$2.previous"; fi
    journal_intent "$3" "$2"
    note_engine_before "$3" "$1"
    set_mark "$3" pending
}

write_config() {
    replace_file "$2" "$3"
    checkpoint "$4"
}

served_config() { clear_mark "$3" pending; }

put_previous() {
    if [ -f "$2.previous" ]; then replace_file "$2.previous" "$3"; else rm -f "$3"; fi
    clear_mark "$3" pending
    # A step that changed nothing leaves no journal: destroy must not later
    # put back this file over one its owner has fixed since.
    if same_as_backup "$3"; then forget "$3"; fi
}
