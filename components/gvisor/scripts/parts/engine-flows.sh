# shellcheck shell=sh
# The two flows: configure (journal, write, restart, roll back) and restore.

# The configure flow: ENGINE RUNTIME DESCRIPTION, then NEW FILE POINT triples
# (the new files ready in the step's scratch folder, written in that order,
# each followed by its checkpoint). Each file is journaled first and its
# restart marked pending until ENGINE serves it; on failure every file is
# put back (roll_back).
apply_configs() {
    _apply_engine=$1 _apply_runtime=$2 _apply_description=$3
    shift 3
    each_file journal_config "$_apply_engine" "$@"
    checkpoint "$_apply_engine:journaled"
    each_file write_config "$_apply_engine" "$@"
    _apply_mark=$(log_mark "$(engine_service "$_apply_engine")")
    _apply_part=0
    restart_engine "$_apply_engine" "$_apply_runtime" || _apply_part=$?
    if [ "$_apply_part" = 0 ]; then
        each_file served_config "$_apply_engine" "$@"
        log "$(engine_label "$_apply_engine") restarted with $_apply_description"
        return 0
    fi
    roll_back "$_apply_engine" "$_apply_runtime" "$_apply_part" "$_apply_mark" "$@"
}

# ENGINE RUNTIME PART MARK, then the NEW FILE POINT triples: every file is put
# back, ENGINE restarted with them, and the step fails naming the part that
# failed and the engine's own reason.
roll_back() {
    _back_engine=$1
    _back_why=$(if [ "$3" = 3 ]; then echo cri; else echo start; fi)
    _back_failure="$(failure_clause "$1" "$2" "$3")$(engine_reason "$1" "$_back_why" "$4")"
    shift 4
    log "$_back_failure; restoring the previous configuration"
    _back_files=$(each_file_name "$@")
    each_file put_previous "$_back_engine" "$@"
    _back_mark=$(log_mark "$(engine_service "$_back_engine")")
    # (A restart that cannot be made leaves the engine as it ran.)
    service_restart "$(engine_service "$_back_engine")" || true
    if wait_for "$_back_engine" 30 engine_up "$_back_engine"; then
        die "$_back_failure; previous configuration restored ($_back_files)"
    fi
    die "$_back_failure; previous configuration restored ($_back_files), but $(engine_label "$_back_engine") does not start with it either$(engine_reason "$_back_engine" start "$_back_mark"), so it is stopped now: fix $_back_files and start it"
}

# The restore flow: ENGINE STEP FILE TAKE_OUT [ARGS]. FILE goes back as it was
# before install, or, edited since, loses only what `TAKE_OUT FILE ARGS`
# removes. Then restart_restored.
restore_config() {
    _restore_engine=$1 _restore_step=$2 _restore_file=$3 _restore_take_out=$4
    shift 4
    # The engine reads its file only when it starts: note whether it runs.
    note_running "$_restore_file" "$_restore_engine"
    if ours_or_original "$_restore_file"; then
        put_back "$_restore_file"
        log "restored $_restore_file as it was before install"
    else
        "$_restore_take_out" "$_restore_file" "$@"
        log "$_restore_file changed since install: removed this program's runtime only"
    fi
    checkpoint "$_restore_step:restored"
}

# After restore_config (and any other file the engine reads): ENGINE FILE.
# A running engine restarts with FILE and must come back, unless it was down
# before install too: then the file is the whole job.
restart_restored() {
    has_mark "$2" restart || return 0
    _restored_mark=$(log_mark "$(engine_service "$1")")
    if service_restart "$(engine_service "$1")" && wait_for "$1" 30 engine_up "$1"; then return 0; fi
    _restored_why=$(engine_reason "$1" start "$_restored_mark")
    if was_down_before "$2"; then
        log "$(engine_label "$1") does not start with the restored $2$_restored_why; it was not running before install either, so it is left stopped"
        return 0
    fi
    die "$(engine_label "$1") did not start again after $2 was restored$_restored_why; the file is back as it was before install: fix it, start $(engine_label "$1"), then run destroy again"
}
