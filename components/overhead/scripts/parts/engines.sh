# shellcheck shell=sh
# Time and the budget's two shares; the engines run containers within them.

now_ms() {
    _t=$(date +%s%3N 2>/dev/null || true)
    case $_t in
        "" | *[!0-9]*)
            read -r _u _ </proc/uptime
            _f=${_u#*.}
            _t=$((${_u%.*} * 1000 + ${_f#0} * 10))
            ;;
    esac
    echo "$_t"
}

# Clean-up gets its own share of the budget, so it always fits: the seconds
# kept for it out of BUDGET.
cleanup_reserve() {
    _reserve=$(($1 / 6))
    [ "$_reserve" -ge 10 ] || _reserve=10
    echo "$_reserve"
}

# Seconds left of the whole budget for one clean-up command (10 at least:
# leaving nothing behind comes before keeping to the second).
cleanup_left() {
    _l=$(budget_left)
    [ "$_l" -ge 10 ] || _l=10
    echo "$_l"
}

# Seconds left for measuring; 0 once the budget's work share is spent.
left() { budget_left "$(cleanup_reserve "$STEP_TIMEOUT")"; }

# True once the work share is spent; the result is then partial (a mark in SCRATCH).
out_of_time() {
    if [ "$(left)" -le 0 ]; then
        : > "$SCRATCH/partial"
        return 0
    fi
    return 1
}


runtime_flags() {
    case $ENGINE:$1 in
        docker:runc) echo "--runtime=runc" ;;
        docker:runsc/*) echo "--runtime=$RUNTIME" ;;
        containerd:runc) echo "--runtime io.containerd.runc.v2" ;;
        # Without CRI's container-type annotation current shims wait forever on `runsc create`.
        containerd:runsc/*) echo "--runtime io.containerd.runsc.v1 --runtime-config-path $(toml_for "${1#runsc/}") --annotation io.kubernetes.cri.container-type=sandbox" ;;
    esac
}

# runsc.toml for a platform: the configured file, or a scratch copy naming another platform.
toml_for() {
    if [ "$1" = "$PLATFORM" ]; then
        echo "$RUNSC_TOML"
        return
    fi
    _toml="$SCRATCH/runsc-$1.toml"
    if [ ! -f "$_toml" ]; then
        grep -v '^ *platform *=' "$RUNSC_TOML" > "$_toml"
        sed -i "s/^\[runsc_config\]\$/&\n  platform = \"$1\"/" "$_toml"
    fi
    echo "$_toml"
}

SEQ=0
next_name() {
    SEQ=$((SEQ + 1))
    echo "$NAME_PREFIX-$SEQ"
}

# A container that hangs (a platform the host cannot run) may not eat the whole budget.
run_cap() {
    _cap=$((STEP_TIMEOUT / 4))
    [ "$_cap" -ge 30 ] || _cap=30
    _l=$(left)
    [ "$_l" -lt "$_cap" ] || _l=$_cap
    echo "$_l"
}

# The engine's own reason for a failed run (its warnings left out).
reason() { grep -v 'level=warn' "$SCRATCH/err" | tail -n 1; }

# One container to completion: run_to_end RUNTIME OUTFILE CMD...; bounded by what is left.
# Success is judged by the output, not the exit status: through containerd a
# runsc container that exits at once can report status 128 (see gvisor-host.sh, verify).
run_to_end() {
    _rt=$1 _out=$2
    shift 2
    _name=$(next_name)
    _left=$(run_cap)
    [ "$_left" -gt 0 ] || return 1
    # shellcheck disable=SC2046 # runtime_flags is a list of words
    case $ENGINE in
        docker)
            timeout "$_left" docker run --rm $(runtime_flags "$_rt") --network=none --name "$_name" "$IMAGE" "$@" \
                >"$_out" 2>"$SCRATCH/err" || forget_container "$_name"
            ;;
        containerd)
            timeout "$_left" ctr -n "$CTR_NAMESPACE" run --rm $(runtime_flags "$_rt") "$IMAGE" "$_name" "$@" \
                >"$_out" 2>"$SCRATCH/err" || forget_container "$_name"
            ;;
    esac
}

start_detached() {
    _rt=$1 _name=$2
    shift 2
    # shellcheck disable=SC2046 # runtime_flags is a list of words
    case $ENGINE in
        docker) timeout "$(run_cap)" docker run -d --rm $(runtime_flags "$_rt") --network=none --name "$_name" "$IMAGE" "$@" ;;
        containerd) timeout "$(run_cap)" ctr -n "$CTR_NAMESPACE" run -d $(runtime_flags "$_rt") "$IMAGE" "$_name" "$@" ;;
    esac >"$SCRATCH/id" 2>"$SCRATCH/err"
}

forget_container() {
    case $ENGINE in
        docker) timeout "$(cleanup_left)" docker rm -f "$1" >/dev/null 2>&1 || true ;;
        containerd)
            timeout "$(cleanup_left)" ctr -n "$CTR_NAMESPACE" tasks kill -s SIGKILL "$1" >/dev/null 2>&1 || true
            timeout "$(cleanup_left)" ctr -n "$CTR_NAMESPACE" tasks rm -f "$1" >/dev/null 2>&1 || true
            timeout "$(cleanup_left)" ctr -n "$CTR_NAMESPACE" containers rm "$1" >/dev/null 2>&1 || true
            ;;
    esac
}

# The image in the engine; one this run pulled is marked in SCRATCH, for cleanup to remove.
prepare_image() {
    case $ENGINE in
        docker)
            if ! timeout "$(run_cap)" docker image inspect "$IMAGE" >/dev/null 2>&1; then
                timeout "$(left)" docker pull -q "$IMAGE" >/dev/null 2>"$SCRATCH/err" ||
                    die "cannot pull $IMAGE for Docker: $(tail -n 2 "$SCRATCH/err")"
                : > "$SCRATCH/image-pulled"
            fi
            ;;
        containerd)
            # A namespace of its own: removing it afterwards proves nothing is left in it.
            : > "$SCRATCH/image-pulled"
            if have docker && timeout "$(run_cap)" docker image inspect "$IMAGE" >/dev/null 2>&1; then
                timeout "$(left)" docker save "$IMAGE" | timeout "$(left)" ctr -n "$CTR_NAMESPACE" images import - >/dev/null 2>"$SCRATCH/err"
            else
                timeout "$(left)" ctr -n "$CTR_NAMESPACE" images pull "$IMAGE" >/dev/null 2>"$SCRATCH/err"
            fi || die "cannot get $IMAGE into containerd: $(tail -n 2 "$SCRATCH/err")"
            ;;
    esac
}

cleanup() {
    _rc=$?
    trap - EXIT INT TERM HUP
    trap '' PIPE
    case ${ENGINE:-} in
        docker)
            for _c in $(timeout "$(cleanup_left)" docker ps -aq --filter "name=$NAME_PREFIX-" 2>/dev/null); do
                forget_container "$_c"
            done
            if [ -e "$SCRATCH/image-pulled" ]; then timeout "$(cleanup_left)" docker rmi "$IMAGE" >/dev/null 2>&1 || true; fi
            ;;
        containerd)
            for _c in $(timeout "$(cleanup_left)" ctr -n "$CTR_NAMESPACE" containers ls -q 2>/dev/null); do
                forget_container "$_c"
            done
            timeout "$(cleanup_left)" ctr -n "$CTR_NAMESPACE" images rm --sync "$IMAGE" >/dev/null 2>&1 || true
            if timeout "$(cleanup_left)" ctr namespaces ls -q 2>/dev/null | grep -qx "$CTR_NAMESPACE"; then
                timeout "$(cleanup_left)" ctr namespaces rm "$CTR_NAMESPACE" >/dev/null 2>&1 ||
                    log "containerd namespace $CTR_NAMESPACE is not empty: $(ctr -n "$CTR_NAMESPACE" snapshots ls 2>/dev/null | wc -l) snapshot lines left"
            fi
            ;;
    esac
    if [ -n "${SCRATCH:-}" ]; then
        # A `runsc do` stopped by its time bound can leave its network namespace mounted there.
        awk -v d="$SCRATCH/" 'index($2, d) == 1 { print $2 }' /proc/self/mounts | while read -r _m; do
            umount -l "$_m" 2>/dev/null || true
        done
        rm -rf "$SCRATCH" || log "could not remove $SCRATCH"
    fi
    exit "$_rc"
}

