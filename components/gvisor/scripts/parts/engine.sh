# shellcheck shell=sh
# What the configure and restore flows (engine-flows.sh) need of an engine.
# An engine (docker or containerd) plugs in through three functions in its
# own part: ENGINE_up (it answers), ENGINE_ready RUNTIME (its checks after a
# restart) and ENGINE_failure RUNTIME PART (what a failed check found). The
# journal's marks beside a config file say what a killed step must still finish.

engine_label() {
    if [ "$1" = docker ]; then
        echo Docker
    elif [ "$CONTAINERD_SERVICE" != containerd ]; then
        echo "containerd (service $CONTAINERD_SERVICE)"
    else
        echo containerd
    fi
}

# The service that restarts ENGINE: k3s and RKE2 run containerd inside their
# own (see use_layout).
engine_service() { if [ "$1" = containerd ]; then echo "$CONTAINERD_SERVICE"; else echo "$1"; fi; }

# ENGINE answers (docker_up, containerd_up).
engine_up() { "$1_up"; }

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

# Restarts ENGINE with runtime RUNTIME configured and checks it part by part
# (docker_ready, containerd_ready). Returns 0, or the part that failed: 1
# start, 2 readiness, 3 the CRI plugin, 4 the runtime's registration.
restart_engine() {
    service_restart "$(engine_service "$1")" || return 1
    checkpoint "$1:restarted"
    "$1_ready" "$2"
}

# What went wrong, for restart_engine's code PART: ENGINE RUNTIME PART
# (docker_failure, containerd_failure say what their checks found).
failure_clause() {
    if [ "$3" = 1 ]; then
        echo "$(engine_label "$1") failed to start with runtime $2"
    else
        "$1_failure" "$2" "$3"
    fi
}

# The engine's own reason for failing PART (start or cri) since MARK
# (log_mark's): ENGINE PART MARK.
engine_reason() { service_log "$(engine_service "$1")" "$3" | pick_reason "$2"; }

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
