#!/bin/sh
# gVisor host agent: copied once to each machine by the GvisorHost component
# (named by its hash, see components/gvisor/agent.py) and run by each step as
#   sh <this file> [-tSTEP_TIMEOUT] [-iINSTANCE] <subcommand> [args...]
# (`sh -s -- <subcommand> ...` with the script on stdin works the same way).
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
# The whole step is bounded (gvisor-fleet:stepTimeout): the lock wait, every
# download, every service restart and check take from the same budget.
STEP_TIMEOUT=${GVISOR_FLEET_STEP_TIMEOUT:-900}
STEP_START=$(date +%s)
# A download that moves less than LOW_SPEED bytes/s for LOW_SPEED_TIME seconds has stalled.
CONNECT_TIMEOUT=20 LOW_SPEED=1024 LOW_SPEED_TIME=30
# One step at a time per host (see take_lock); volatile, so a reboot clears it.
LOCK=${GVISOR_FLEET_LOCK:-/run/lock/gvisor-fleet.lock}
# Scratch space of the running step: beside the state, so a killed step's
# leftovers are found and removed by the next one.
SCRATCH="$STATE_DIR/tmp"
BLOCK_BEGIN="# BEGIN gvisor-fleet runtime (managed; removed on destroy)"
BLOCK_END="# END gvisor-fleet runtime"

log() { printf 'gvisor-host: %s\n' "$*" >&2; }
die() { printf 'gvisor-host: ERROR: %s\n' "$*" >&2; exit 1; }
fact() { printf '%s=%s\n' "$1" "$2"; }
have() { command -v "$1" >/dev/null 2>&1; }

# --- small helpers -----------------------------------------------------------

# Keeps the first copy of a file (or folder) we are about to change, or the
# fact that it was absent, so destroy can put back exactly what was there. A
# later run never overwrites it. Config files we write through a symlink, so
# their contents are kept; with "verbatim" (installDir) a link is kept as one.
backup_once() {
    target=$1
    saved="$BACKUP_DIR$target"
    [ -e "$saved" ] || [ -L "$saved" ] || [ -e "$saved.absent" ] && return 0
    mkdir -p "$(dirname "$saved")"
    if [ -e "$target" ] || [ -L "$target" ]; then
        rm -rf "$saved.partial"
        if [ "${2:-}" = verbatim ]; then cp -a "$target" "$saved.partial"; else cp -pL "$target" "$saved.partial"; fi
        mv "$saved.partial" "$saved"
    else
        : > "$saved.absent"
    fi
}

# Journal first: before FILE is replaced by NEW, its first copy and the hash
# of NEW are on disk. Whatever point a step is killed at, destroy can then
# tell "ours or the original" (restore byte for byte) from "edited since".
journal_intent() {
    # Journaled by this run: a failed run that leaves FILE as it was forgets it (finish_step).
    has_backup "$1" || NEW_JOURNAL="${NEW_JOURNAL:-} $1"
    backup_once "$1"
    _journal_hash=$(sha512_of "$2")
    grep -qx "$_journal_hash" "$BACKUP_DIR$1.written" 2>/dev/null ||
        echo "$_journal_hash" >> "$BACKUP_DIR$1.written"
}

# True when FILE holds what was there before install or something this program wrote.
ours_or_original() {
    [ -e "$1" ] || return 0
    _ours_hash=$(sha512_of "$1")
    # (the .written file under STATE_DIR is where earlier versions kept one hash)
    grep -qx "$_ours_hash" "$BACKUP_DIR$1.written" "$STATE_DIR/${1##*/}.written" 2>/dev/null && return 0
    [ -f "$BACKUP_DIR$1" ] && [ "$_ours_hash" = "$(sha512_of "$BACKUP_DIR$1")" ]
}

# True when FILE is as it was before this program first touched it.
same_as_backup() {
    if [ -e "$BACKUP_DIR$1.absent" ]; then
        [ ! -e "$1" ]
    else
        [ -f "$1" ] && cmp -s "$1" "$BACKUP_DIR$1"
    fi
}

# Puts back the first copy taken by backup_once (the journal stays until forget).
put_back() {
    target=$1
    saved="$BACKUP_DIR$target"
    if [ -d "$saved" ] || [ -L "$saved" ]; then
        rm -rf "$target"
        cp -a "$saved" "$target"
    elif [ -e "$saved" ]; then
        replace_file "$saved" "$target"
    elif [ -e "$saved.absent" ]; then
        rm -rf "$target"
    fi
}

forget() {
    rm -rf "$BACKUP_DIR$1" "$BACKUP_DIR$1.partial"
    rm -f "$BACKUP_DIR$1.absent" "$BACKUP_DIR$1.written" "$BACKUP_DIR$1.restart" "$BACKUP_DIR$1.pending" \
        "$BACKUP_DIR$1.engine-before" "$STATE_DIR/${1##*/}.written"
}

restore_backup() { put_back "$1" && forget "$1"; }

# Notes once, in FILE's journal, whether ENGINE, which reads FILE, was
# running before FILE was put back, so a re-run after a failed restart still
# restarts it and still fails until the engine comes back.
note_running() {
    if ! [ -e "$BACKUP_DIR$1.restart" ] && engine_up "$2"; then
        mkdir -p "$(dirname "$BACKUP_DIR$1")"
        : > "$BACKUP_DIR$1.restart"
    fi
}
was_running() { [ -e "$BACKUP_DIR$1.restart" ]; }

# Notes once, beside FILE's first copy, whether ENGINE ran before this
# program first wrote FILE: destroy then owes the owner the file, not a
# running engine (one that could not start with the owner's file before).
note_engine_before() {
    [ -e "$BACKUP_DIR$1.engine-before" ] && return 0
    if engine_up "$2"; then echo up; else echo down; fi > "$BACKUP_DIR$1.engine-before"
}
was_down_before() { [ "$(cat "$BACKUP_DIR$1.engine-before" 2>/dev/null)" = down ]; }

# FILE is written but its engine has not yet restarted with it: set before
# the write, cleared once the engine serves the new file. A step killed in
# between finds it and restarts the engine, though the file is already right.
mark_pending() { : > "$BACKUP_DIR$1.pending"; }
restart_pending() { [ -e "$BACKUP_DIR$1.pending" ]; }
clear_pending() { rm -f "$BACKUP_DIR$1.pending"; }

has_backup() { [ -e "$BACKUP_DIR$1" ] || [ -L "$BACKUP_DIR$1" ] || [ -e "$BACKUP_DIR$1.absent" ]; }

sha512_of() { sha512sum "$1" | cut -d' ' -f1; }

# Replaces a file atomically with the contents of another (same filesystem).
# Through a symlink: the link is the owner's layout, so its target is written.
# The temporary name is fixed: the step lock makes it ours, and the next step
# removes one a killed step left (drop_leftovers).
replace_file() {
    src=$1 dst=$2
    [ ! -L "$dst" ] || dst=$(readlink -f "$dst")
    mkdir -p "$(dirname "$dst")"
    cp "$src" "$dst.gvisor-fleet.tmp" 2>/dev/null || write_failed "$dst"
    if [ -e "$dst" ]; then
        chmod --reference="$dst" "$dst.gvisor-fleet.tmp" 2>/dev/null || true
    fi
    mv -f "$dst.gvisor-fleet.tmp" "$dst"
}

# A write that failed: say plainly when the file system is full.
write_failed() {
    rm -f "$1.gvisor-fleet.tmp"
    _free=$(df -Pk "$(dirname "$1")" 2>/dev/null | awk 'NR == 2 { print $4 }')
    if [ -n "$_free" ] && [ "$_free" -lt 1024 ]; then
        die "cannot write $1: the file system holding it is full (${_free} KiB free); free some space and run again"
    fi
    die "cannot write $1"
}

drop_leftovers() {
    for _left in "$@"; do
        [ ! -L "$_left" ] || _left=$(readlink -f "$_left")
        rm -f "$_left.gvisor-fleet.tmp" "$_left.gvisor-fleet.new"
    done
}

# Seconds left of the step's budget (never less than 1).
remaining() {
    _left=$((STEP_START + STEP_TIMEOUT - $(date +%s)))
    [ "$_left" -gt 0 ] || _left=1
    echo "$_left"
}

# Test hook, inert in production (nothing sets GVISOR_FLEET_TEST_STOP_AT):
# the step stops itself at the named point so a test can SIGKILL it exactly there.
checkpoint() {
    [ "${GVISOR_FLEET_TEST_STOP_AT:-}" = "$1" ] || return 0
    log "stopped at $1 (pid $$)"
    kill -STOP $$
}

# One step at a time per host: two `pulumi up`s, or a person running the
# agent by hand, must not interleave writes to the same files. The kernel
# drops a flock(1) lock when its holder dies, so a killed step cannot leave the
# host locked. Without flock, a lock folder names its holder (PID and start
# time, against PID reuse) and is taken over once that process is gone.
take_lock() {
    mkdir -p "$(dirname "$LOCK")"
    if have flock; then
        while :; do
            exec 9>>"$LOCK"
            flock -w "$(remaining)" 9 || lock_timeout
            # The holder before us removed the file on its way out: a lock on
            # a removed file guards nothing, so open the path again.
            [ "$(stat -c %d:%i "$LOCK" 2>/dev/null)" = "$(stat -L -c %d:%i "/proc/$$/fd/9")" ] && break
            exec 9>&-
        done
        LOCKED=flock
    else
        _lock_empty=0
        until mkdir "$LOCK.d" 2>/dev/null; do
            _holder=$(cat "$LOCK.d/holder" 2>/dev/null || true)
            if [ -z "$_holder" ]; then
                _lock_empty=$((_lock_empty + 1)) # killed between mkdir and naming itself?
            fi
            if { [ -n "$_holder" ] && ! still_running "$_holder"; } || [ "$_lock_empty" -gt 5 ]; then
                log "taking over $LOCK.d from a step that no longer runs (${_holder:-unnamed})"
                rm -rf "$LOCK.d"
                _lock_empty=0
                continue
            fi
            [ "$(remaining)" -gt 1 ] || lock_timeout
            sleep 1
        done
        echo "$$ $(started_at $$)" > "$LOCK.d/holder"
        LOCKED=dir
    fi
}

lock_timeout() {
    die "another gvisor-fleet step still holds $LOCK after ${STEP_TIMEOUT}s (gvisor-fleet:stepTimeout); wait for the other 'pulumi up' or manual run to finish"
}

release_lock() {
    case ${LOCKED:-} in
        flock) rm -f "$LOCK" && exec 9>&- ;;
        dir) rm -rf "$LOCK.d" ;;
    esac
    LOCKED=""
}

# Field 22 of /proc/PID/stat (after the command name, which may hold spaces).
started_at() { sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f20; }

still_running() {
    # shellcheck disable=SC2086 # "PID STARTTIME"
    set -- $1
    [ -n "${2:-}" ] && [ "$(started_at "$1")" = "$2" ]
}

# Runs on every exit of a step that changes the host (also on TERM/INT/HUP).
finish_step() {
    _step_rc=$?
    [ -z "${PROBE_TMP:-}" ] || rm -rf "$PROBE_TMP"
    [ -n "${LOCKED:-}" ] || return 0 # another step runs: its files are not ours to tidy
    if [ "$_step_rc" != 0 ]; then
        # A step that failed and changed nothing leaves no journal behind.
        for _f in ${NEW_JOURNAL:-}; do
            if same_as_backup "$_f"; then forget "$_f"; fi
        done
    fi
    [ -z "${RUN_TMP:-}" ] || rm -rf "$RUN_TMP"
    tidy_state
    release_lock
}

# Every changing step: lock, then clear what a killed step left behind.
begin_step() {
    trap finish_step EXIT
    trap 'exit 129' HUP
    trap 'exit 130' INT
    trap 'exit 143' TERM
    take_lock
    rm -rf "$SCRATCH"
}

# A private scratch folder in RUN_TMP, removed when the step ends.
make_scratch() {
    mkdir -p "$SCRATCH"
    RUN_TMP=$(mktemp -d "$SCRATCH/step.XXXXXX")
}

# After destroy's last step nothing of ours stays: empty journal folders and
# the state folder itself go.
tidy_state() {
    rm -rf "$SCRATCH"
    [ ! -d "$STATE_DIR" ] || find "$STATE_DIR" -type d -empty -delete 2>/dev/null || true
}

# Every download is bounded: connecting, stalling (under LOW_SPEED bytes/s for
# LOW_SPEED_TIME s) and the whole transfer (what is left of the step). Returns
# 1 when the server answers that the file is not there (HTTP 404 or 410, a
# missing file:// path). Any other failure stops the step saying what
# happened, each its own way: the name did not resolve (DNS), the connection
# failed, TLS failed, a limit was hit, or the server answered another error.
# POSIX sh has no local variables: helpers use names no caller uses.
fetch() {
    _fetch_url=$1 _fetch_dest=$2
    _fetch_max=$(remaining)
    _fetch_slow=$LOW_SPEED_TIME _fetch_connect=$CONNECT_TIMEOUT
    [ "$_fetch_slow" -le "$_fetch_max" ] || _fetch_slow=$_fetch_max
    [ "$_fetch_connect" -le "$_fetch_max" ] || _fetch_connect=$_fetch_max
    _fetch_rc=0 _fetch_code="" _fetch_log="$_fetch_dest.log"
    if have curl; then
        # curl's own limit comes first, so it can say which phase timed out.
        _fetch_code=$(timeout "$((_fetch_max + 2))" curl -fsSL --retry 3 --connect-timeout "$_fetch_connect" \
            --max-time "$_fetch_max" --speed-limit "$LOW_SPEED" --speed-time "$_fetch_slow" \
            --retry-max-time "$_fetch_max" -w '%{http_code} %{time_connect}' -o "$_fetch_dest" "$_fetch_url" \
            2>"$_fetch_log") || _fetch_rc=$?
        _fetch_why=$(curl_failure "$_fetch_rc" "$_fetch_code")
    elif have wget; then
        # -nv: errors only, which say what failed (wget's exit code 4 covers
        # every network failure), in English (LC_ALL=C) for wget_failure to read.
        # wget's own limits come first, as curl's do.
        LC_ALL=C timeout "$((_fetch_max + 2))" wget -nv -T "$_fetch_slow" --connect-timeout="$_fetch_connect" \
            -t 3 -O "$_fetch_dest" "$_fetch_url" 2>"$_fetch_log" || _fetch_rc=$?
        _fetch_why=$(wget_failure "$_fetch_rc" "$_fetch_log")
    else
        die "neither curl nor wget is installed; install one of them to download gVisor"
    fi
    _fetch_said=$(grep -v '^ *$' "$_fetch_log" 2>/dev/null | tail -n 1 || true)
    rm -f "$_fetch_log"
    [ "$_fetch_rc" != 0 ] || return 0
    rm -f "$_fetch_dest"
    fetch_failed "$_fetch_url" "$_fetch_why" "$_fetch_said"
}

# The kind of a curl failure: notfound, dns, connect, tls, connect-timeout,
# timeout, http:<code>, broken or other.
curl_failure() {
    case $1 in
        0) echo ok ;;
        22) case ${2%% *} in 404 | 410) echo notfound ;; *) echo "http:${2%% *}" ;; esac ;;
        37) echo notfound ;;
        5 | 6) echo dns ;;
        7) echo connect ;;
        35 | 51 | 53 | 54 | 58 | 59 | 60 | 64 | 66 | 77 | 80 | 82 | 83 | 90 | 91) echo tls ;;
        # One of curl's limits; without a connect time the connection never came up.
        28) case ${2#* } in *[1-9]*) echo timeout ;; *) echo connect-timeout ;; esac ;;
        124) echo timeout ;; # the step's budget ran out (curl's retries included)
        18 | 52 | 56) echo broken ;;
        *) echo other ;;
    esac
}

# The kind of a wget failure, from its log: "failed: Connection timed out." is
# a connect that went unanswered (a read that did not is "Read error (...)"),
# judged on the last attempt, which the step's budget may have cut short.
wget_failure() {
    if [ "$1" = 0 ]; then echo ok
    elif grep -v '^ *$' "$2" | tail -n 1 | grep -qi 'failed: connection timed out'; then echo connect-timeout
    elif [ "$1" = 124 ] || grep -qi 'timed out' "$2"; then echo timeout
    elif grep -qiE 'ERROR (404|410)' "$2"; then echo notfound
    elif grep -qiE 'resolv|bad address|name or service not known' "$2"; then echo dns
    elif grep -qiE 'refused|unreachable|no route' "$2"; then echo connect
    elif [ "$1" = 5 ] || grep -qiE 'ssl|tls|certificate' "$2"; then echo tls
    elif grep -qE 'ERROR [0-9]+' "$2"; then echo "http:$(sed -n 's/.*ERROR \([0-9]*\).*/\1/p' "$2" | tail -n 1)"
    else echo other
    fi
}

# One message per kind of failure: a host that cannot reach the bucket is
# told apart from a release that is not there (return 1, for the caller).
fetch_failed() {
    _ff_url=$1 _ff_why=$2 _ff_said=${3:+ ($3)}
    _ff_server=$(printf '%s' "$_ff_url" | sed -n 's|^[a-z]*://\([^/]*\).*|\1|p')
    _ff_fix="check gvisor-fleet:baseUrl, or set gvisor-fleet:releaseFetch to once so hosts need no internet"
    case $_ff_why in
        notfound) return 1 ;;
        dns) die "cannot resolve $_ff_server (DNS) for $_ff_url: this host cannot look up the release server$_ff_said; $_ff_fix" ;;
        connect) die "cannot connect to $_ff_server for $_ff_url: connection refused or no route$_ff_said; $_ff_fix" ;;
        connect-timeout) die "cannot connect to $_ff_server for $_ff_url: no answer within ${_fetch_connect}s (timeout)$_ff_said; $_ff_fix" ;;
        tls) die "TLS with $_ff_server failed for $_ff_url (handshake or certificate)$_ff_said; check the server's certificate and that it speaks https; $_ff_fix" ;;
        timeout) die "download of $_ff_url stopped at a limit: connect ${_fetch_connect}s, stalled below $LOW_SPEED bytes/s for ${_fetch_slow}s, or ${_fetch_max}s left of the step's ${STEP_TIMEOUT}s (gvisor-fleet:stepTimeout); check the mirror (gvisor-fleet:baseUrl)" ;;
        http:*) die "$_ff_url answered HTTP ${_ff_why#http:}$_ff_said; check gvisor-fleet:baseUrl" ;;
        broken) die "the connection to $_ff_server broke off while fetching $_ff_url$_ff_said; run again, or check the mirror (gvisor-fleet:baseUrl)" ;;
        *) die "download of $_ff_url failed$_ff_said; check gvisor-fleet:baseUrl" ;;
    esac
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
    mark_engine_log "$svc"
    # Bounded, and without the lock's descriptor: a daemon started from
    # here must not hold the step lock for its whole life.
    case $(service_manager) in
        systemd) timeout "$(remaining)" systemctl restart "$svc" 9>&- ;;
        service) timeout "$(remaining)" service "$svc" restart 9>&- ;;
        # Fail, not exit: the caller still has its previous config to put back.
        *) log "cannot restart $svc: no systemd and no 'service' command on this host" && return 1 ;;
    esac
}

# Where the engine's log stood before a restart (time, and size of the log
# file Debian's init scripts write), so only what this start logged is read.
mark_engine_log() {
    RESTART_SINCE=$(date +%s)
    RESTART_OFFSET=$({ wc -c <"/var/log/$1.log"; } 2>/dev/null || echo 0)
}

# The engine's own reason for failing PART (see failed_part) since the last
# restart: from journald under systemd, else from /var/log/<service>.log
# (Debian's sysvinit scripts, e.g. /etc/init.d/docker).
engine_reason() {
    if [ "$(service_manager)" = systemd ] && have journalctl; then
        journalctl -u "$1" --since "@${RESTART_SINCE:-0}" --no-pager -o cat 2>/dev/null
    elif [ -f "/var/log/$1.log" ]; then
        tail -c +"$((${RESTART_OFFSET:-0} + 1))" "/var/log/$1.log"
    fi | pick_reason "$2"
}

# Reads an engine's log and prints ": <reason>", the line that best says why
# PART failed, or nothing. Lines are weighed by level, in logrus's text form
# (level=error msg="..." error="...") and in JSON ("level":"error", ...):
# routine levels never count; a plugin that failed to load is logged as a
# warning and counts for the CRI plugin. Lines about CNI (no network config
# yet, routine before a cluster exists) count only when nothing else does.
# Plain lines (the daemon's last words on stderr, a Go panic) count when they
# say something failed; a panic's stack frames never do.
pick_reason() {
    awk -v part="$1" '
        function value(name,    q) {
            q = "\"([^\"\\\\]|\\\\.)*\""
            if (match($0, "\"" name "\":" q)) return unquote(substr($0, RSTART + length(name) + 3, RLENGTH - length(name) - 3))
            if (match($0, "(^| )" name "=" q)) { v = substr($0, RSTART, RLENGTH); sub(/^ ?[a-z]+=/, "", v); return unquote(v) }
            if (match($0, "(^| )" name "=[^ ]+")) { v = substr($0, RSTART, RLENGTH); sub(/^ ?[a-z]+=/, "", v); return v }
            return ""
        }
        function unquote(v) { v = substr(v, 2, length(v) - 2); gsub(/\\"/, "\"", v); return v }
        {
            level = value("level")
            if (level == "") {
                if ($0 ~ /^[ \t]|^goroutine |^created by |^\[signal |^(Start|Stop|Failed to start|Scheduled restart)|\.service: /) next
                if (tolower($0) !~ /error|fail|invalid|cannot|unable|panic|denied|no such|not a directory/) next
                text = $0; score = ($0 ~ /^panic: /) ? 5 : 4
            } else {
                msg = value("msg"); err = value("error")
                text = (err == "" ? msg : msg ": " err)
                if (level ~ /^(fatal|panic)$/) score = 5
                else if (level == "error") score = 3
                else if (level ~ /^warn/ && msg ~ /failed to load plugin/) score = 2
                else next
            }
            lower = tolower(text)
            if (part == "cri" && lower ~ /cri/ && lower !~ /cni/) score += 3
            if (lower ~ /cni/) score = 1
            if (score >= best) { best = score; reason = text }
        }
        END { if (reason != "") printf ": %s", reason }
    '
}

# --- the configure and restore flows both engines share ------------------------

engine_label() { if [ "$1" = docker ]; then echo Docker; else echo containerd; fi; }

engine_up() { if [ "$1" = docker ]; then docker_up; else containerd_serving; fi; }

# Restarts ENGINE (docker or containerd) with runtime RUNTIME configured and
# checks it part by part. Returns 0, or the part that failed: 1 start,
# 2 readiness, 3 the CRI plugin, 4 the runtime's registration.
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

# Calls FUNC ARG NEW FILE POINT for each NEW FILE POINT triple after ARG.
each_file() {
    _each_fn=$1 _each_arg=$2
    shift 2
    while [ $# -ge 3 ]; do
        "$_each_fn" "$_each_arg" "$1" "$2" "$3"
        shift 3
    done
}

# Where the step keeps FILE as it was before this run (RUN_TMP).
previous_copy() { printf '%s/previous%s' "$RUN_TMP" "$(printf '%s' "$1" | tr / _)"; }

journal_config() {
    if [ -f "$3" ]; then cp -p "$3" "$(previous_copy "$3")"; fi
    journal_intent "$3" "$2"
    note_engine_before "$3" "$1"
    mark_pending "$3"
}

write_config() {
    replace_file "$2" "$3"
    checkpoint "$4"
}

served_config() { clear_pending "$3"; }

put_previous() {
    _prev=$(previous_copy "$3")
    if [ -f "$_prev" ]; then replace_file "$_prev" "$3"; else rm -f "$3"; fi
    clear_pending "$3"
    # A step that changed nothing leaves no journal: destroy must not later
    # put back this file over one its owner has fixed since.
    if same_as_backup "$3"; then forget "$3"; fi
}

# The configure flow: ENGINE RUNTIME DESCRIPTION, then NEW FILE POINT triples
# (the new files ready in RUN_TMP, written in that order, each followed by
# its checkpoint). Each file is journaled first and its restart marked
# pending until ENGINE serves it; on failure every file is put back, ENGINE
# restarted with them, and the step fails naming the part that failed and
# the engine's own reason.
apply_configs() {
    engine=$1 runtime=$2 description=$3
    shift 3
    each_file journal_config "$engine" "$@"
    checkpoint "$engine:journaled"
    each_file write_config "$engine" "$@"
    part=0
    restart_engine "$engine" "$runtime" || part=$?
    if [ "$part" = 0 ]; then
        each_file served_config "$engine" "$@"
        log "$(engine_label "$engine") restarted with $description"
        return 0
    fi
    reason=$(engine_reason "$engine" "$(if [ "$part" = 3 ]; then echo cri; else echo start; fi)")
    failure="$(failure_clause "$engine" "$runtime" "$part")$reason"
    log "$failure; restoring the previous configuration"
    files=$(each_file_name "$@")
    each_file put_previous "$engine" "$@"
    # (A restart that cannot be made leaves the engine as it ran.)
    service_restart "$engine" || true
    if wait_for "$engine" 30 engine_up "$engine"; then
        die "$failure; previous configuration restored ($files)"
    fi
    die "$failure; previous configuration restored ($files), but $(engine_label "$engine") does not start with it either$(engine_reason "$engine" start), so it is stopped now: fix $files and start it"
}

each_file_name() {
    _names=""
    while [ $# -ge 3 ]; do
        _names="${_names:+$_names, }$2"
        shift 3
    done
    printf '%s' "$_names"
}

# The restore flow: ENGINE STEP FILE TAKE_OUT [ARGS]. FILE goes back as it was
# before install, or, edited since, loses only what `TAKE_OUT FILE ARGS`
# removes. A running engine restarts with it and must come back, unless it
# was down before install too: then the file is the whole job.
restore_config() {
    engine=$1 step=$2 file=$3 take_out=$4
    shift 4
    # The engine reads its file only when it starts: note whether it runs.
    note_running "$file" "$engine"
    if ours_or_original "$file"; then
        put_back "$file"
        log "restored $file as it was before install"
    else
        "$take_out" "$file" "$@"
        log "$file changed since install: removed this program's runtime only"
    fi
    checkpoint "$step:restored"
}

# After restore_config (and any other file the engine reads): ENGINE FILE.
restart_restored() {
    was_running "$2" || return 0
    if service_restart "$1" && wait_for "$1" 30 engine_up "$1"; then return 0; fi
    if was_down_before "$2"; then
        log "$(engine_label "$1") does not start with the restored $2$(engine_reason "$1" start); it was not running before install either, so it is left stopped"
        return 0
    fi
    die "$(engine_label "$1") did not start again after $2 was restored$(engine_reason "$1" start); the file is back as it was before install: fix it, start $(engine_label "$1"), then run destroy again"
}

# Waits (bounded, also by the step's budget) until a probe command succeeds.
wait_for() {
    what=$1 tries=$2
    shift 2
    [ "$tries" -le "$(remaining)" ] || tries=$(remaining)
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

# Docker before 23.0 loads its AppArmor profile whenever the kernel has
# AppArmor on, and then fails every container if apparmor_parser is missing
# (moby#44900); 23.0 and later check for the parser first.
apparmor_blocks_docker() {
    [ "$(cat /sys/module/apparmor/parameters/enabled 2>/dev/null)" = Y ] && [ -d /sys/kernel/security/apparmor ] ||
        return 1
    if have apparmor_parser || [ -x /sbin/apparmor_parser ] || [ -x /usr/sbin/apparmor_parser ]; then return 1; fi
    _docker_major=${1%%.*}
    case $_docker_major in '' | *[!0-9]*) return 1 ;; esac
    [ "$_docker_major" -lt 23 ]
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
    if [ "$docker_mode" != off ] && [ -n "$dv" ] && apparmor_blocks_docker "$dv"; then
        die "Docker $dv on this host cannot start any container: the kernel has AppArmor on and apparmor_parser is missing (Docker before 23.0 does not check for it); install the 'apparmor' package, boot with apparmor=0, or set gvisor-fleet:docker to off"
    fi
    for tool in sha512sum tar mktemp timeout; do
        have "$tool" || die "'$tool' is missing on this host; install coreutils/tar"
    done
    have curl || have wget || die "neither curl nor wget is installed; install one of them"
}

# --- install -----------------------------------------------------------------

# Fetches the release's checksum files and prints the layout found:
# "archive" (gvisor.tar.bz2, releases since 2026-08) or "loose" (older).
detect_layout() {
    url=$1 dir=$2
    have curl || have wget || die "neither curl nor wget is installed; install one of them to download gVisor"
    if fetch "$url/gvisor.tar.bz2.sha512" "$dir/gvisor.tar.bz2.sha512"; then
        echo archive
    elif fetch "$url/runsc.sha512" "$dir/runsc.sha512"; then
        echo loose
    else
        die "gVisor release not found at $url/ (neither gvisor.tar.bz2.sha512 nor runsc.sha512; the server answered, the release is not there); check gvisor-fleet:release and gvisor-fleet:baseUrl"
    fi
}

# Downloads and checks the release into $dir/stage (runsc, shim, gvisor-bin/).
download_release() {
    url=$1 dir=$2 layout=$3 pinned_sha=$4
    if [ "$layout" = archive ]; then
        files=gvisor.tar.bz2
    else
        # One pinned hash cannot cover two separately published files.
        [ "$pinned_sha" = - ] ||
            die "$url uses the legacy loose layout (runsc and the shim published separately), which one gvisor-fleet:sha512 pin cannot cover; pin a release published as gvisor.tar.bz2 (since 20260831) or remove the pin"
        files=runsc
        # Releases before 2019 published no shim; containerd then cannot use gVisor.
        if fetch "$url/containerd-shim-runsc-v1.sha512" "$dir/containerd-shim-runsc-v1.sha512"; then
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
        fetch "$url/$f" "$dir/$f" || die "download failed: $url/$f is not there (its .sha512 is)"
        (cd "$dir" && sha512sum -c "$f.sha512" >/dev/null 2>&1) ||
            die "checksum mismatch for $url/$f (expected $(cut -d' ' -f1 "$dir/$f.sha512")); nothing was installed"
    done
    unpack_release "$dir" "$layout" "$url/gvisor.tar.bz2" "$files"
}

# Unpacks (or moves) a checked release in DIR into DIR/stage and checks that its runsc runs here.
unpack_release() {
    dir=$1 layout=$2 from=$3 files=${4:-}
    mkdir -p "$dir/stage"
    if [ "$layout" = archive ]; then
        tar -xjf "$dir/gvisor.tar.bz2" -C "$dir/stage" || die "$from is not a bzip2 tar archive; nothing was installed"
    else
        for f in $files; do mv "$dir/$f" "$dir/stage/"; done
    fi
    [ -f "$dir/stage/runsc" ] || die "$from holds no runsc"
    chmod 0755 "$dir/stage/runsc"
    [ -f "$dir/stage/containerd-shim-runsc-v1" ] && chmod 0755 "$dir/stage/containerd-shim-runsc-v1"
    "$dir/stage/runsc" --version >/dev/null 2>&1 ||
        die "the runsc in $from does not run on this machine ($(uname -m)); check that it was built for $(uname -m)"
}

# Nothing on the host changes until the release is known to be there: the
# checksum files are fetched into a private folder of the system's temporary
# space first, so an unreachable server or a missing release leaves no trace.
cmd_install() {
    base_url=$1 release=$2 prefix=$3 pinned_sha=$4
    arch=$(uname -m)
    url="$base_url/$release/$arch"
    trap finish_step EXIT
    PROBE_TMP=$(mktemp -d)
    layout=$(detect_layout "$url" "$PROBE_TMP")
    if [ "$layout" = archive ]; then sumfile=gvisor.tar.bz2.sha512; else sumfile=runsc.sha512; fi
    published=$(cut -d' ' -f1 "$PROBE_TMP/$sumfile")
    begin_install "$prefix"
    cp "$PROBE_TMP"/*.sha512 "$tmp/"
    if already_installed "$url" "$published"; then
        log "release $release already installed from $url"
        fact changed false
    else
        download_release "$url" "$tmp" "$layout" "$pinned_sha"
        put_in_place "$url" "$release" "$layout" "$published"
        log "installed gVisor $release ($layout layout) into $prefix"
    fi
    report_installed "$release" "$layout"
}

# The release archive copied to this host by the machine running Pulumi
# (gvisor-fleet:releaseFetch once), checked there against the release's
# .sha512 (or the pin) and here again against that same SHA-512.
cmd_install_file() {
    copy=$1 expected=$2 release=$3 prefix=$4
    source="copy:$release/$(uname -m)"
    state="$STATE_DIR/install.state"
    trap finish_step EXIT
    # Checked where it lies first, so a bad or missing copy changes nothing on the host.
    if [ -f "$copy" ]; then
        found=$(sha512_of "$copy")
        [ "$found" = "$expected" ] || copy_mismatch "$found"
    elif ! already_installed "$source" "$expected"; then
        copy_missing
    fi
    begin_install "$prefix"
    if already_installed "$source" "$expected"; then
        log "release $release already installed from a copy with this SHA-512"
        fact changed false
    else
        [ -f "$copy" ] || copy_missing
        # The staged copy is what gets unpacked: checked again, as root, where no one else writes.
        cp "$copy" "$tmp/gvisor.tar.bz2"
        found=$(sha512_of "$tmp/gvisor.tar.bz2")
        [ "$found" = "$expected" ] || copy_mismatch "$found"
        unpack_release "$tmp" archive "$copy"
        put_in_place "$source" "$release" archive "$expected"
        log "installed gVisor $release (copied, SHA-512 checked) into $prefix"
    fi
    report_installed "$release" archive
}

copy_missing() {
    die "the copied release $copy is not on this host (removed since it was copied?); copy it again: pulumi up --replace with the URN of this machine's release-copy resource (pulumi stack --show-urns)"
}

copy_mismatch() {
    die "the copy of gVisor $release at $copy has SHA-512 $1, not $expected as checked on the machine running Pulumi (gvisor-fleet:releaseFetch once): it changed on the way or on this host; nothing was installed"
}

# Takes the step lock and a staging folder ($tmp) beside installDir, so
# moving files into place is atomic.
begin_install() {
    prefix=$1
    state="$STATE_DIR/install.state"
    mkdir -p "$STATE_DIR" "$prefix"
    begin_step
    # Staging folders of killed installs (tens of MB each); the lock says none is in use.
    rm -rf "$prefix"/.gvisor-fleet.* "$prefix/gvisor-bin.old"
    RUN_TMP=$(mktemp -d "$prefix/.gvisor-fleet.XXXXXX")
    tmp=$RUN_TMP
}

# Same release already installed from the same source and untouched.
already_installed() {
    [ -f "$state" ] && [ -x "$prefix/runsc" ] &&
        grep -qx "url=$1" "$state" && grep -qx "published=$2" "$state" &&
        grep -qx "runsc=$(sha512_of "$prefix/runsc")" "$state"
}

# Moves a staged release ($tmp/stage) into installDir.
put_in_place() {
    checkpoint install:downloaded
    # Journal first: what was there (or that nothing was), then a state
    # saying the files in installDir are ours, and only then the moves. A
    # re-run after a kill never takes our runsc for the owner's.
    if ! [ -f "$state" ]; then
        for f in runsc containerd-shim-runsc-v1 gvisor-bin; do backup_once "$prefix/$f" verbatim; done
        checkpoint install:backed-up
    fi
    write_install_state "$1" "$2" "$3" pending
    checkpoint install:journaled
    if [ -d "$tmp/stage/gvisor-bin" ]; then
        [ ! -d "$prefix/gvisor-bin" ] || mv "$prefix/gvisor-bin" "$prefix/gvisor-bin.old"
        mv "$tmp/stage/gvisor-bin" "$prefix/gvisor-bin"
        rm -rf "$prefix/gvisor-bin.old"
    else
        rm -rf "$prefix/gvisor-bin" # ours, from another release
    fi
    if [ -f "$tmp/stage/containerd-shim-runsc-v1" ]; then
        mv -f "$tmp/stage/containerd-shim-runsc-v1" "$prefix/containerd-shim-runsc-v1"
    else
        rm -f "$prefix/containerd-shim-runsc-v1" # ours, from another release
    fi
    checkpoint install:shim-moved
    mv -f "$tmp/stage/runsc" "$prefix/runsc"
    checkpoint install:runsc-moved
    write_install_state "$1" "$2" "$3" "$4"
    fact changed true
}

report_installed() {
    fact release "$1"
    fact layout "$2"
    fact runsc_path "$prefix/runsc"
    fact runsc_version "$("$prefix/runsc" --version 2>/dev/null | head -n 1 | sed 's/^runsc version //')"
    if [ -x "$prefix/containerd-shim-runsc-v1" ]; then fact shim yes; else fact shim no; fi
}

# install.state says the files in installDir are ours; "published=pending"
# while they are being moved, so the next run finishes a killed install.
write_install_state() {
    {
        echo "url=$1"
        echo "release=$2"
        echo "layout=$3"
        echo "published=$4"
        if [ "$4" != pending ]; then echo "runsc=$(sha512_of "$prefix/runsc")"; fi
        echo "prefix=$prefix"
    } > "$state.tmp"
    mv -f "$state.tmp" "$state"
}

cmd_uninstall() {
    prefix=$1
    state="$STATE_DIR/install.state"
    begin_step
    rm -rf "$prefix"/.gvisor-fleet.* "$prefix/gvisor-bin.old"
    # Ours go first and the state after: a kill in between is finished by a re-run.
    if [ -f "$state" ]; then
        rm -rf "$prefix/runsc" "$prefix/containerd-shim-runsc-v1" "$prefix/gvisor-bin"
        checkpoint uninstall:removed
        rm -f "$state"
    fi
    for f in runsc containerd-shim-runsc-v1 gvisor-bin; do
        if has_backup "$prefix/$f"; then restore_backup "$prefix/$f"; fi
    done
    tidy_state
    log "gVisor removed from $prefix"
}

# --- runsc flag check --------------------------------------------------------

# Every [runsc_config] key must be a flag the installed runsc accepts, or
# every container creation fails ("flag provided but not defined").
check_runsc_flags() {
    runsc=$1
    shift
    [ -x "$runsc" ] || die "$runsc is not installed; the install step must run first"
    known=$("$runsc" flags 2>&1 | sed -n 's/^ *-\([A-Za-z0-9_.-]*\).*/\1/p')
    for k in "$@"; do
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
    begin_step
    drop_leftovers "$DAEMON_JSON"
    # As for containerd: a flag this runsc does not know fails every container.
    # shellcheck disable=SC2046 # flag names are single words
    check_runsc_flags "$prefix/runsc" $(printf '%s\n' "$@" | sed -n 's/^--\([^=]*\).*/\1/p')
    make_scratch
    tmp=$RUN_TMP
    [ -f "$DAEMON_JSON" ] && cp -p "$DAEMON_JSON" "$tmp/daemon.json"
    # runsc merges runtimes.<name> and keeps every other key (it rejects bad JSON).
    if ! "$prefix/runsc" install --config_file "$tmp/daemon.json" --runtime "$runtime" --clobber -- "$@" >/dev/null 2>"$tmp/err" ||
        grep -q '^panic:' "$tmp/err"; then
        # runsc panics (and exits 0) when "runtimes" is not a JSON object.
        grep -q '^panic: interface conversion' "$tmp/err" &&
            die "$DAEMON_JSON: \"runtimes\" must be an object of runtime definitions, e.g. {\"runc\": {\"path\": \"runc\"}}; fix it, nothing was changed"
        die "cannot update $DAEMON_JSON: $(first_reason "$tmp/err"); nothing was changed"
    fi
    [ "$default_runtime" = true ] && set_default_runtime "$tmp/daemon.json" "$runtime"

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

docker_up() { timeout 10 docker info >/dev/null 2>&1; }

cmd_docker_restore() {
    runtime=$1 prefix=$2
    begin_step
    drop_leftovers "$DAEMON_JSON"
    has_backup "$DAEMON_JSON" || { fact docker untouched; return 0; }
    restore_config docker docker-restore "$DAEMON_JSON" take_out_docker_runtime "$runtime" "$prefix"
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
        1)
            # `config migrate` exists since containerd 2.0 only.
            if [ "$major" -ge 2 ]; then
                die "$CONTAINERD_CONFIG is a version 1 config; migrate it first: containerd config migrate > new.toml, review it, then move it into place"
            fi
            die "$CONTAINERD_CONFIG is a version 1 config; migrate it to version 2 first (containerd $major.x has no 'config migrate': start from 'containerd config default', which prints a version 2 file, and carry your settings over)"
            ;;
        *) die "$CONTAINERD_CONFIG has an unknown 'version = $file_version'" ;;
    esac
}

config_file_version() {
    if [ -f "$1" ]; then
        # Top-level only (a table's own `version` key is not the file's), indented or not.
        v=$(sed -n '/^[[:space:]]*\[/q; s/^[[:space:]]*version[[:space:]]*=[[:space:]]*\([0-9][0-9]*\).*/\1/p' "$1" | head -n 1)
        echo "${v:-1}"
    else
        echo none
    fi
}

# `containerd config dump` of a candidate config. containerd resolves relative
# imports against the config's own folder, so the candidate sits beside the
# real file while it is checked, and messages name the real file.
dump_candidate() {
    cand=$1
    if [ -d "$(dirname "$CONTAINERD_CONFIG")" ]; then
        cand="$CONTAINERD_CONFIG.gvisor-fleet.new"
        cp "$1" "$cand"
    fi
    _dump_rc=0
    containerd --config "$cand" config dump > "$2" 2>"$3" || _dump_rc=$?
    [ "$cand" = "$1" ] || rm -f "$cand"
    sed -i "s|$cand|$CONTAINERD_CONFIG|g; s|$1|$CONTAINERD_CONFIG|g" "$3"
    return "$_dump_rc"
}

# The engine's own reason from its error output: the line that says what is
# wrong (a TOML error, a failed load), not the stack frames after it.
first_reason() {
    grep -m 1 -iE 'toml|failed|invalid|error|cannot|no such|denied|space' "$1" || head -n 1 "$1"
}

# Why containerd cannot read candidate CONFIG (its error output in ERR), as
# one sentence. A value of the wrong type comes out of containerd as a Go
# panic or a decode error that may lack the key or the line: name both here.
config_reason() {
    if ! grep -qE "Can.t convert|cannot decode TOML|interface conversion" "$2"; then
        first_reason "$2"
        return 0
    fi
    _row=$(sed -nE 's/.*\(([0-9]+), [0-9]+\): Can.t convert.*/\1/p; s/.*at row ([0-9]+) column.*/\1/p' "$2" | head -n 1)
    _found=$(sed -nE 's/.*interface \{\} is ([^,]*), not .*/\1/p; s/.*decode TOML ([a-z]+) into.*/\1/p; s/.*Can.t convert [^(]*\(([a-z0-9]+)\).*/\1/p' "$2" | head -n 1)
    _wanted=$(sed -nE 's/.*interface \{\} is [^,]*, not (.*)/\1/p; s/.*decode TOML [a-z]+ into .* of type ([][a-z0-9.]+).*/\1/p; s/.*decode TOML [a-z]+ into ([^ ]+)$/\1/p; s/.*Can.t convert .* to ([^ (]+).*/\1/p' "$2" | head -n 1)
    _keys=$(wrong_type_keys "$1" "$_row" "$_found")
    printf 'a value has the wrong type (%s where containerd expects %s)%s; fix the value' \
        "$(type_name "$_found")" "$(type_name "$_wanted")" "${_keys:+: $_keys}"
}

type_name() {
    case $1 in
        int*) echo "a number" ;;
        float*) echo "a decimal number" ;;
        bool*) echo "true or false" ;;
        string) echo "a string" ;;
        '[]'* | slice | array) echo "a list" ;;
        map* | table | config.*) echo "a table" ;;
        *) echo "a value of another type" ;;
    esac
}

# The keys of CONFIG that may hold the wrong value, with their tables and
# lines: the key on ROW when containerd named one, else every key under a
# plugin table whose value is of the FOUND kind.
wrong_type_keys() {
    awk -v row="$2" -v found="$3" '
        /^[[:space:]]*\[/ { table = $0; gsub(/^[[:space:]]+|[[:space:]]+$/, "", table); next }
        /^[[:space:]]*[A-Za-z0-9_."'"'"'-]+[[:space:]]*=/ {
            key = $0; sub(/[[:space:]]*=.*/, "", key); gsub(/^[[:space:]]+/, "", key)
            value = $0; sub(/^[^=]*=[[:space:]]*/, "", value)
            if (row != "") { if (NR != row) next }
            else {
                if (table !~ /^\[plugins/) next
                if (found ~ /^int|^integer$/ && value !~ /^[-+]?[0-9]/) next
                if (found ~ /^bool/ && value !~ /^(true|false)/) next
                if (found == "string" && value !~ /^["'"'"']/) next
                if (found ~ /^\[\]|^slice$|^array$/ && value !~ /^\[/) next
                if (found == "") next
            }
            out = out (out == "" ? "" : ", ") (table == "" ? "" : table " ") key " (line " NR ")"
        }
        END { printf "%s", out }
    ' "$1"
}

strip_managed_block() {
    sed "/^$BLOCK_BEGIN\$/,/^$BLOCK_END\$/d" "$1"
}

# Docker CE's containerd package ships a version 1 config whose only setting
# is disabled_plugins = ["cri"], so Kubernetes cannot use containerd at all.
# That file (comments aside) becomes version 2 with CRI enabled; any other
# version 1 file needs a real migration, which only its owner can review.
# An empty file counts as that file too.
upgrade_docker_default_config() {
    enable_cri "$1" > "$1.one-line"
    if grep -v '^[[:space:]]*#' "$1.one-line" | grep -v '^[[:space:]]*$' | grep -qv '^[[:space:]]*disabled_plugins'; then
        return 1
    fi
    echo "version = 2"
    sed '/^[[:space:]]*disabled_plugins/d' "$1.one-line"
}

# Prints the file with CRI dropped from disabled_plugins, however the list is
# written (one line or several, double or single quotes); a list without CRI
# stays as it was. Version 2+ files name plugins by full id.
enable_cri() {
    awk '
        !inlist && /^[[:space:]]*disabled_plugins[[:space:]]*=/ { inlist = 1; text = "" }
        inlist {
            text = text $0 "\n"
            if (index($0, "]") == 0) next
            inlist = 0
            if (text !~ /cri/) { printf "%s", text; next }
            body = text
            sub(/^[^[]*\[/, "", body)
            sub(/\][^]]*$/, "", body)
            n = split(body, items, ",")
            kept = ""
            for (i = 1; i <= n; i++) {
                item = items[i]
                gsub(/^[[:space:]]+|[[:space:]]+$/, "", item)
                if (item == "" || item ~ /cri/) continue
                kept = kept (kept == "" ? "" : ", ") item
            }
            printf "disabled_plugins = [%s]\n", kept
            next
        }
        { print }
    ' "$1"
}

default_runtime() {
    sed -n "s/^ *default_runtime_name = [\"']\\([^\"']*\\)[\"'].*/\\1/p" "$1" | head -n 1
}

# CRI serves unless the config disables it; we never do, so it must be "ok".
cri_ok() { [ "$(cri_status)" = ok ]; }

cri_status() {
    timeout 10 ctr --connect-timeout 2s plugins ls 2>/dev/null | awk '$2 == "cri" { print $4 }'
}

# containerd listens where its config says: `[grpc] address` in containerd
# 1.x's `config dump`, the grpc server plugin's `address` in 2.x's (which reads
# an older file's [grpc] table into it). ctr follows CONTAINERD_ADDRESS.
grpc_address() {
    sed -nE "/^ *\[(grpc|plugins\.[\"']io\.containerd\.server\.v1\.grpc[\"'])\]/,/^ *\[/s/^ *address = [\"']([^\"']*)[\"'].*/\1/p" "$1" | head -n 1
}

use_grpc_address() {
    _address=$(grpc_address "$1")
    if [ -n "$_address" ]; then
        CONTAINERD_ADDRESS=$_address
        export CONTAINERD_ADDRESS
    fi
}

# The address of the config on disk (restore and verify steps).
use_configured_address() {
    [ -f "$CONTAINERD_CONFIG" ] && have containerd || return 0
    mkdir -p "$SCRATCH"
    _dump=$(mktemp "$SCRATCH/dump.XXXXXX")
    if containerd --config "$CONTAINERD_CONFIG" config dump > "$_dump" 2>/dev/null; then use_grpc_address "$_dump"; fi
    rm -f "$_dump"
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
    begin_step
    drop_leftovers "$CONTAINERD_CONFIG" "$runsc_toml"
    cv=$(containerd_version)
    major=${cv%%.*}
    make_scratch
    tmp=$RUN_TMP
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
    # shellcheck disable=SC2046 # flag names are single words
    check_runsc_flags "$prefix/runsc" $(sed -n '/^\[runsc_config\]/,/^\[/s/^ *\([A-Za-z0-9_.-]*\) *=.*/\1/p' "$tmp/runsc.toml")

    [ "$file_version" != none ] || echo "version = $version" > "$tmp/config.toml"
    if grep -Eq "^ *\[plugins\.[\"']${plugin}[\"']\.containerd\.runtimes\.$runtime(\.options)?\]" "$tmp/config.toml"; then
        die "$CONTAINERD_CONFIG already defines [$table] outside this program's block; remove it or set gvisor-fleet:runtimeName to another name"
    fi
    enable_cri "$tmp/config.toml" > "$tmp/cri.toml"
    if ! cmp -s "$tmp/cri.toml" "$tmp/config.toml"; then
        log "enabling the CRI plugin (it was listed in disabled_plugins)"
        mv "$tmp/cri.toml" "$tmp/config.toml"
    fi
    # A file that names no runtime relies on containerd's built-in default
    # (runc); naming ours replaces the built-in map, and CRI then fails with
    # "no corresponding runtime configured ... default_runtime_name". Keep it.
    keep_default=""
    if ! grep -Eq "^ *\[plugins\.[\"']${plugin}[\"']\.containerd\.runtimes\." "$tmp/config.toml"; then
        dump_candidate "$tmp/config.toml" "$tmp/before.toml" "$tmp/err" ||
            die "containerd rejects $CONTAINERD_CONFIG as it is: $(config_reason "$tmp/config.toml" "$tmp/err"); fix it first"
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
    dump_candidate "$tmp/config.toml" "$tmp/dump.toml" "$tmp/err" ||
        die "containerd rejects the merged $CONTAINERD_CONFIG: $(config_reason "$tmp/config.toml" "$tmp/err"); nothing was changed"
    use_grpc_address "$tmp/dump.toml"
    grep -Eq "ConfigPath = [\"']${runsc_toml}[\"']" "$tmp/dump.toml" ||
        die "after merging, containerd's effective config has no runtime '$runtime': an imported file (imports = [...]) probably redefines the CRI plugin table and replaces it; move the CRI settings into $CONTAINERD_CONFIG. Nothing was changed"
    default_rt=$(default_runtime "$tmp/dump.toml")
    [ -z "$default_rt" ] || grep -Fq "runtimes.$default_rt]" "$tmp/dump.toml" ||
        die "after merging, containerd's default runtime '$default_rt' has no runtime table; CRI would fail. Nothing was changed"

    if [ -f "$CONTAINERD_CONFIG" ] && cmp -s "$tmp/config.toml" "$CONTAINERD_CONFIG" &&
        [ -f "$runsc_toml" ] && cmp -s "$tmp/runsc.toml" "$runsc_toml" &&
        ! restart_pending "$CONTAINERD_CONFIG" && ! restart_pending "$runsc_toml" && containerd_serving; then
        log "containerd already configured with runtime $runtime"
        fact containerd unchanged
        fact containerd_config_version "$version"
        return 0
    fi

    apply_configs containerd "$runtime" "runtime $runtime (config version $version, $plugin)" \
        "$tmp/runsc.toml" "$runsc_toml" containerd:runsc-toml-written \
        "$tmp/config.toml" "$CONTAINERD_CONFIG" containerd:written
    fact containerd configured
    fact containerd_config_version "$version"
}

cmd_containerd_restore() {
    runsc_toml=$1
    begin_step
    drop_leftovers "$CONTAINERD_CONFIG" "$runsc_toml"
    has_backup "$CONTAINERD_CONFIG" || has_backup "$runsc_toml" || { fact containerd untouched; return 0; }
    use_configured_address
    put_back "$runsc_toml"
    restore_config containerd containerd-restore "$CONTAINERD_CONFIG" take_out_containerd_block
    restart_restored containerd "$CONTAINERD_CONFIG"
    forget "$CONTAINERD_CONFIG"
    forget "$runsc_toml"
    fact containerd restored
}

# Takes this program's block out of FILE, keeping the owner's edits.
take_out_containerd_block() {
    make_scratch
    strip_managed_block "$1" > "$RUN_TMP/config.toml"
    replace_file "$RUN_TMP/config.toml" "$1"
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
    begin_step
    make_scratch
    tmp=$RUN_TMP
    use_configured_address
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
    die "usage: sh FILE [-tSECONDS] [-iINSTANCE] preflight ARCH PLATFORM DOCKER CONTAINERD [SUBCOMMAND ARGS] | install | install-file | uninstall DIR [remove-copy] | docker-configure | docker-restore | containerd-plan | containerd-configure | containerd-restore | verify ARGS"
}

# A copy named by its hash (agent.py) refuses to run once it differs from it.
check_copy() {
    case ${0##*/} in
        gvisor-host-*) ;;
        *) return 0 ;;
    esac
    case $(sha256sum < "$0") in
        "${0##*-}"*) ;;
        *) die "$PWD/$0 is altered: its SHA-256 does not start with the hash in its name; copy it again: pulumi up --replace <URN of this machine's '-agent' copy> (pulumi stack --show-urns)" ;;
    esac
}

# Every copy of the script in its folder, then the folder if nothing else is
# in it: what the install step's delete leaves, last on destroy.
remove_copy() {
    case ${0##*/} in
        gvisor-host-*)
            rm -f "${0%/*}"/gvisor-host-*
            rmdir "${0%/*}" 2>/dev/null || true
            ;;
    esac
}

# One subcommand; preflight and uninstall may be followed by another, which
# runs only after them (the install step: checks, then install; its delete:
# uninstall, then remove-copy).
dispatch() {
    [ $# -ge 1 ] || usage
    sub=$1
    shift
    case $sub in
        preflight)
            [ $# -ge 4 ] || usage
            cmd_preflight "$1" "$2" "$3" "$4"
            shift 4
            [ $# -eq 0 ] || dispatch "$@"
            ;;
        uninstall)
            [ $# -ge 1 ] || usage
            cmd_uninstall "$1"
            shift
            [ $# -eq 0 ] || dispatch "$@"
            ;;
        remove-copy) remove_copy ;;
        install) cmd_install "$@" ;;
        install-file) cmd_install_file "$@" ;;
        docker-configure) cmd_docker_configure "$@" ;;
        docker-restore) cmd_docker_restore "$@" ;;
        containerd-plan) cmd_containerd_plan "$@" ;;
        containerd-configure) cmd_containerd_configure "$@" ;;
        containerd-restore) cmd_containerd_restore "$@" ;;
        verify) cmd_verify "$@" ;;
        *) usage ;;
    esac
}

# -i names the machine's generation on the command line only (a new machine
# runs the step again); the script has no use for it.
while :; do
    case ${1-} in
        -t*) STEP_TIMEOUT=${1#-t} ;;
        -i*) ;;
        *) break ;;
    esac
    shift
done
case $STEP_TIMEOUT in
    "" | *[!0-9]*) die "step timeout '$STEP_TIMEOUT' is not a number of seconds (gvisor-fleet:stepTimeout)" ;;
esac
check_copy
dispatch "$@"
