#!/bin/sh
# What the sandbox costs on this host: runc against runsc, through the same
# container engine and on the same image. Sent on stdin by the
# OverheadMeasurement component and run as
#   sh -s -- measure ENGINE DOCKER_MODE CONTAINERD_MODE RUNTIME IMAGE INSTALL_DIR RUNSC_TOML PLATFORM BUDGET RUNS RELEASE
# Prints one line, overhead=<compact JSON>, on stdout; progress on stderr.
# Bounded: everything, clean-up included, ends within BUDGET seconds; what
# did not fit is left out and the result says "partial". Leaves nothing
# behind: every container it started, the containerd namespace and image it
# made, and its scratch folder are removed on every exit path.
set -eu

CTR_NAMESPACE=gvisor-fleet-overhead
NAME_PREFIX=gvisor-fleet-overhead-$$
# Work sizes inside the container: long enough to time at /proc/uptime's
# 10 ms resolution, short enough for an emulated machine.
SYSCALL_BYTES=${GVISOR_FLEET_OVERHEAD_SYSCALL_BYTES:-100000} # dd bs=1: two syscalls per byte
FILES=${GVISOR_FLEET_OVERHEAD_FILES:-300}
NET_BLOCKS=${GVISOR_FLEET_OVERHEAD_NET_BLOCKS:-256} # 64 KiB each, over loopback
NET_PORT=47011
IDLE_SETTLE=2

log() { printf 'overhead: %s\n' "$*" >&2; }
die() { printf 'overhead: ERROR: %s\n' "$*" >&2; exit 1; }
have() { command -v "$1" >/dev/null 2>&1; }

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

# --- budget ------------------------------------------------------------------

# Clean-up gets its own share of the budget, so it always fits.
start_budget() {
    START_MS=$(now_ms)
    END_S=$(($(date +%s) + BUDGET))
    reserve=$((BUDGET / 6))
    [ "$reserve" -ge 10 ] || reserve=10
    WORK_END_S=$((END_S - reserve))
    PARTIAL=false
}

# Seconds left of the whole budget for one clean-up command (10 at least:
# leaving nothing behind comes before keeping to the second).
cleanup_left() {
    _l=$((END_S - $(date +%s)))
    [ "$_l" -ge 10 ] || _l=10
    echo "$_l"
}

# Seconds left for measuring; 0 once the budget's work share is spent.
left() {
    _l=$((WORK_END_S - $(date +%s)))
    [ "$_l" -gt 0 ] || _l=0
    echo "$_l"
}

out_of_time() {
    if [ "$(left)" -le 0 ]; then
        PARTIAL=true
        return 0
    fi
    return 1
}

# --- engines -----------------------------------------------------------------

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
    _cap=$((BUDGET / 4))
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

prepare_image() {
    IMAGE_PULLED=false
    case $ENGINE in
        docker)
            if ! timeout "$(run_cap)" docker image inspect "$IMAGE" >/dev/null 2>&1; then
                timeout "$(left)" docker pull -q "$IMAGE" >/dev/null 2>"$SCRATCH/err" ||
                    die "cannot pull $IMAGE for Docker: $(tail -n 2 "$SCRATCH/err")"
                IMAGE_PULLED=true
            fi
            ;;
        containerd)
            # A namespace of its own: removing it afterwards proves nothing is left in it.
            IMAGE_PULLED=true
            if have docker && timeout "$(run_cap)" docker image inspect "$IMAGE" >/dev/null 2>&1; then
                timeout "$(left)" docker save "$IMAGE" | timeout "$(left)" ctr -n "$CTR_NAMESPACE" images import - >/dev/null 2>"$SCRATCH/err"
            else
                timeout "$(left)" ctr -n "$CTR_NAMESPACE" images pull "$IMAGE" >/dev/null 2>"$SCRATCH/err"
            fi || die "cannot get $IMAGE into containerd: $(tail -n 2 "$SCRATCH/err")"
            ;;
    esac
}

# --- clean-up ----------------------------------------------------------------

cleanup() {
    _rc=$?
    trap - EXIT INT TERM HUP
    trap '' PIPE
    case ${ENGINE:-} in
        docker)
            for _c in $(timeout "$(cleanup_left)" docker ps -aq --filter "name=$NAME_PREFIX-" 2>/dev/null); do
                forget_container "$_c"
            done
            if [ "${IMAGE_PULLED:-false}" = true ]; then timeout "$(cleanup_left)" docker rmi "$IMAGE" >/dev/null 2>&1 || true; fi
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

# --- the figures -------------------------------------------------------------

# Runs inside the container: busybox applets only (the verify image is a bare
# busybox); times from /proc/uptime, in centiseconds, printed as ms. containerd
# without CNI leaves the namespace's loopback down: it is brought up first.
# shellcheck disable=SC2016 # expanded by the container's shell
BENCH='cs() { read -r u _ </proc/uptime; f=${u#*.}; echo $((${u%.*} * 100 + ${f#0})); }
s=$(cs); busybox dd if=/dev/zero of=/dev/null bs=1 count=$1 2>/dev/null; e=$(cs); echo "syscall $(((e - s) * 10))"
busybox mkdir /ovh; s=$(cs); i=0
while [ $i -lt $2 ]; do echo x >/ovh/f$i; i=$((i + 1)); done
busybox stat /ovh/* >/dev/null; busybox ls -l /ovh >/dev/null; busybox rm -r /ovh; e=$(cs); echo "file $(((e - s) * 10))"
busybox ip link set lo up 2>/dev/null
busybox nc -l -p $4 -e busybox dd if=/dev/zero bs=65536 count=$3 2>/dev/null &
i=0; until busybox netstat -ltn 2>/dev/null | busybox grep -q ":$4 "; do i=$((i + 1)); [ $i -lt 100 ] || break; busybox sleep 0.05; done
s=$(cs); n=$(busybox nc 127.0.0.1 $4 2>/dev/null | busybox wc -c); e=$(cs)
if [ "$n" = $(($3 * 65536)) ]; then echo "net $(((e - s) * 10))"; else echo "net fail $n"; fi'

# skip RUNTIME REASON: left out of the figures, named with why.
skip() {
    log "$1 not measured: $2"
    printf '%s:%s\n' "$(json_string "$1")" "$(json_string "$2")" >> "$SCRATCH/skipped"
    runtimes=$(echo " $runtimes " | sed "s| $1 | |; s/^ *//; s/ *\$//")
}

# A sample file per runtime and figure: $SCRATCH/<runtime-slug>.<figure>
slug() { echo "$1" | tr '/' '-'; }
record() { echo "$3" >> "$SCRATCH/$(slug "$1").$2"; }

sample_start() {
    _t0=$(now_ms)
    run_to_end "$1" "$SCRATCH/out" sh -c 'echo ok' || true
    if [ "$(cat "$SCRATCH/out" 2>/dev/null)" = ok ]; then
        record "$1" start_ms $(($(now_ms) - _t0))
    else
        out_of_time || log "$1: a container did not run: $(reason)"
        return 1
    fi
}

sample_bench() {
    run_to_end "$1" "$SCRATCH/bench" sh -c "$BENCH" bench "$SYSCALL_BYTES" "$FILES" "$NET_BLOCKS" "$NET_PORT" || true
    if ! grep -q '^net ' "$SCRATCH/bench" 2>/dev/null; then
        out_of_time || log "$1: the benchmark container failed: $(reason)"
        return 1
    fi
    while read -r _fig _ms _rest; do
        case $_ms in
            "" | *[!0-9]*) log "$1: $_fig not measured ($_ms $_rest)" ;;
            *) record "$1" "${_fig}_ms" "$_ms" ;;
        esac
    done < "$SCRATCH/bench"
}

# RSS of the sandbox's host processes: those in the container's cgroup or
# naming it on their command line (runsc's sandbox and gofer), shims excluded
# (both runtimes have one).
rss_kib() {
    _total=0
    for _d in /proc/[0-9]*; do
        if grep -q -- "$1" "$_d/cgroup" 2>/dev/null || { tr '\0' ' ' < "$_d/cmdline"; } 2>/dev/null | grep -q -- "$1"; then
            case $(cat "$_d/comm" 2>/dev/null) in containerd-shim* | "") continue ;; esac
            _kb=$(awk '/^VmRSS:/ { print $2 }' "$_d/status" 2>/dev/null)
            _total=$((_total + ${_kb:-0}))
        fi
    done
    echo "$_total"
}

sample_idle_memory() {
    _name=$(next_name)-idle
    if ! start_detached "$1" "$_name" sleep 3600; then
        out_of_time || log "$1: the idle container did not start: $(reason)"
        forget_container "$_name"
        return 1
    fi
    # Idle means up for as long as a start took (an emulated machine needs far longer).
    _settle=$(($(tail -n 1 "$SCRATCH/$(slug "$1").start_ms" 2>/dev/null || echo 0) / 1000))
    [ "$_settle" -ge "$IDLE_SETTLE" ] || _settle=$IDLE_SETTLE
    [ "$_settle" -lt "$(left)" ] || _settle=$(left)
    sleep "$_settle"
    _id=$_name
    [ "$ENGINE" = containerd ] || _id=$(head -n 1 "$SCRATCH/id")
    _kib=$(rss_kib "$_id")
    forget_container "$_name"
    if [ "$_kib" -gt 0 ]; then record "$1" idle_rss_kib "$_kib"; else log "$1: no process of the idle container found"; fi
}

# median, p90 (nearest rank) and n of a sample file, as a JSON object.
stats_json() {
    sort -n "$1" | awk '{ v[NR] = $1 } END {
        if (NR == 0) exit 1
        m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
        r = int(0.9 * NR); if (r < 0.9 * NR) r++
        printf "{\"median\":%g,\"p90\":%g,\"n\":%d}", m, v[r], NR }'
}

json_string() { printf '"%s"' "$(printf '%s' "$1" | sed 's/\\/\\\\/g; s/"/\\"/g' | tr -d '\n')"; }

runtime_json() {
    _sep=""
    printf '{'
    for _fig in start_ms syscall_ms file_ms net_ms idle_rss_kib; do
        _f="$SCRATCH/$(slug "$1").$_fig"
        [ -s "$_f" ] || continue
        printf '%s"%s":%s' "$_sep" "$_fig" "$(stats_json "$_f")"
        _sep=,
    done
    printf '}'
}

detect_virt() {
    if have systemd-detect-virt; then
        systemd-detect-virt --vm 2>/dev/null || true
    elif grep -qi qemu /proc/cpuinfo /sys/class/dmi/id/sys_vendor 2>/dev/null; then
        echo qemu
    else
        echo unknown
    fi
}

# Opening /dev/kvm is not enough (a device that opens may run no guest): runsc
# must start a sandbox on it, within a short bound (its files go to the scratch folder).
kvm_usable() {
    [ -c /dev/kvm ] && (: <>/dev/kvm) 2>/dev/null &&
        TMPDIR=$SCRATCH timeout "$(($(run_cap) < 15 ? $(run_cap) : 15))" "$prefix/runsc" --platform=kvm --network=none "do" true >/dev/null 2>&1
}

cmd_measure() {
    [ $# -eq 11 ] || die "measure needs 11 arguments, got $#"
    engine_mode=$1 docker_mode=$2 containerd_mode=$3 RUNTIME=$4 IMAGE=$5 prefix=$6 RUNSC_TOML=$7 PLATFORM=$8
    BUDGET=$9 RUNS=${10} release=${11}
    case $BUDGET$RUNS in "" | *[!0-9]*) die "budget '$BUDGET' and runs '$RUNS' must be whole numbers" ;; esac
    [ "$(id -u)" = 0 ] || die "must run as root (the machine's user needs passwordless sudo)"
    [ -x "$prefix/runsc" ] || die "$prefix/runsc is missing: the install step must run first"
    start_budget
    docker_on=false containerd_on=false
    if [ "$docker_mode" != off ] && have docker && timeout "$(run_cap)" docker info >/dev/null 2>&1; then docker_on=true; fi
    if [ "$containerd_mode" != off ] && have ctr && timeout "$(run_cap)" ctr --connect-timeout 10s version >/dev/null 2>&1; then containerd_on=true; fi
    case $engine_mode in
        auto) if [ "$docker_on" = true ]; then ENGINE=docker; elif [ "$containerd_on" = true ]; then ENGINE=containerd; else ENGINE=""; fi ;;
        docker | containerd) if eval "[ \"\$${engine_mode}_on\" = true ]"; then ENGINE=$engine_mode; else ENGINE=""; fi ;;
        *) die "engine '$engine_mode' is not auto, docker or containerd" ;;
    esac
    [ -n "$ENGINE" ] || die "no configured container engine is running here (engine '$engine_mode', docker '$docker_mode', containerd '$containerd_mode')"

    SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/gvisor-fleet-overhead.XXXXXX")
    trap cleanup EXIT
    # A dropped SSH session hangs up, and the next log line then gets SIGPIPE.
    trap 'exit 130' INT TERM HUP
    trap 'exit 141' PIPE
    : > "$SCRATCH/skipped"

    # The configured platform always; the other one where this engine can pick it per
    # container (containerd, through a scratch runsc.toml) and the host can run it.
    runtimes="runc runsc/$PLATFORM"
    other=systrap
    [ "$PLATFORM" != systrap ] || other=kvm
    if [ "$ENGINE" = docker ]; then
        skip "runsc/$other" "Docker's runtime '$RUNTIME' is registered with platform $PLATFORM only"
    elif [ "$other" = kvm ] && ! kvm_usable; then
        skip runsc/kvm "no /dev/kvm that runsc can start a sandbox on"
    else
        runtimes="$runtimes runsc/$other"
    fi

    log "engine $ENGINE, runtimes: $runtimes; budget ${BUDGET}s, $RUNS runs"
    prepare_image
    round=0
    while [ "$round" -lt "$RUNS" ] && ! out_of_time; do
        round=$((round + 1))
        # Runtime after runtime within each figure, so a budget that runs out
        # still leaves runc and runsc side by side.
        for rt in $runtimes; do
            if ! out_of_time && ! sample_start "$rt" && [ "$round" = 1 ] && ! out_of_time; then
                # A runtime that cannot run a container here is named, not measured.
                skip "$rt" "$(reason)"
            fi
        done
        for rt in $runtimes; do out_of_time || sample_bench "$rt" || true; done
        # One idle sandbox per runtime, in the first round.
        for rt in $runtimes; do
            if [ "$round" = 1 ] && ! out_of_time; then sample_idle_memory "$rt" || true; fi
        done
    done
    [ "$round" -ge "$RUNS" ] || PARTIAL=true

    {
        printf 'overhead={"v":1,"release":%s,"runsc_version":%s,"arch":%s,"kernel":%s,"virt":%s,"engine":"%s"' \
            "$(json_string "$release")" "$(json_string "$(timeout "$(cleanup_left)" "$prefix/runsc" --version 2>/dev/null | sed -n 's/^runsc version //p')")" \
            "$(json_string "$(uname -m)")" "$(json_string "$(uname -r)")" "$(json_string "$(detect_virt)")" "$ENGINE"
        printf ',"budget_s":%d,"runs":%d,"rounds":%d,"partial":%s,"elapsed_s":%s' \
            "$BUDGET" "$RUNS" "$round" "$PARTIAL" "$((($(now_ms) - START_MS) / 1000))"
        printf ',"work":{"syscall_bytes":%d,"files":%d,"net_kib":%d}' "$SYSCALL_BYTES" "$FILES" "$((NET_BLOCKS * 64))"
        printf ',"runtimes":{'
        sep=""
        for rt in $runtimes; do
            printf '%s"%s":%s' "$sep" "$rt" "$(runtime_json "$rt")"
            sep=,
        done
        printf '},"skipped":{%s}}\n' "$(paste -sd, "$SCRATCH/skipped")"
    }
}

[ $# -ge 1 ] || die "usage: sh -s -- measure ARGS"
sub=$1
shift
case $sub in
    measure) cmd_measure "$@" ;;
    *) die "usage: sh -s -- measure ARGS" ;;
esac
