# shellcheck shell=sh
# The measure subcommand and the entry.

# ENGINE_MODE DOCKER_MODE CONTAINERD_MODE RUNTIME IMAGE INSTALL_DIR RUNSC_TOML PLATFORM BUDGET RUNS RELEASE
cmd_measure() {
    [ $# -eq 11 ] || die "measure needs 11 arguments, got $#"
    # shellcheck disable=SC2034 # the run's settings, read by the engine and figure parts
    RUNTIME=$4 IMAGE=$5 prefix=$6 RUNSC_TOML=$7 PLATFORM=$8 RUNS=${10} release=${11}
    case $9$RUNS in "" | *[!0-9]*) die "budget '$9' and runs '$RUNS' must be whole numbers" ;; esac
    [ "$(id -u)" = 0 ] || die "must run as root (the machine's user needs passwordless sudo)"
    [ -x "$prefix/runsc" ] || die "$prefix/runsc is missing: the install step must run first"
    budget_start "$9"
    ENGINE=$(pick_engine "$1" "$2" "$3")

    SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/gvisor-fleet-overhead.XXXXXX")
    trap cleanup EXIT
    # A dropped SSH session hangs up, and the next log line then gets SIGPIPE.
    trap 'exit 130' INT TERM HUP
    trap 'exit 141' PIPE
    : > "$SCRATCH/skipped"

    runtimes=$(plan_runtimes "$prefix")
    log "engine $ENGINE, runtimes: $runtimes; budget ${STEP_TIMEOUT}s, $RUNS runs"
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
                runtimes=$(without "$runtimes" "$rt")
            fi
        done
        for rt in $runtimes; do out_of_time || sample_bench "$rt" || true; done
        # One idle sandbox per runtime, in the first round.
        for rt in $runtimes; do
            if [ "$round" = 1 ] && ! out_of_time; then sample_idle_memory "$rt" || true; fi
        done
    done
    [ "$round" -ge "$RUNS" ] || : > "$SCRATCH/partial"
    print_result "$release" "$prefix" "$round" "$runtimes"
}

# The engine measured, of those configured and running (Docker first):
# ENGINE_MODE DOCKER_MODE CONTAINERD_MODE.
pick_engine() {
    case $1 in auto | docker | containerd) ;; *) die "engine '$1' is not auto, docker or containerd" ;; esac
    if [ "$1" != containerd ] && [ "$2" != off ] && have docker && timeout "$(run_cap)" docker info >/dev/null 2>&1; then
        echo docker
    elif [ "$1" != docker ] && [ "$3" != off ] && have ctr &&
        timeout "$(run_cap)" ctr --connect-timeout 10s version >/dev/null 2>&1; then
        echo containerd
    else
        die "no configured container engine is running here (engine '$1', docker '$2', containerd '$3')"
    fi
}

# The runtimes to measure: the configured platform always; the other one
# where this engine can pick it per container (containerd, through a scratch
# runsc.toml) and the host can run it. PREFIX, where runsc is.
plan_runtimes() {
    _other=systrap
    [ "$PLATFORM" != systrap ] || _other=kvm
    if [ "$ENGINE" = docker ]; then
        skip "runsc/$_other" "Docker's runtime '$RUNTIME' is registered with platform $PLATFORM only"
    elif [ "$_other" = kvm ] && ! kvm_usable "$1"; then
        skip runsc/kvm "no /dev/kvm that runsc can start a sandbox on"
    else
        echo "runc runsc/$PLATFORM runsc/$_other"
        return 0
    fi
    echo "runc runsc/$PLATFORM"
}

# The result line: RELEASE PREFIX ROUNDS RUNTIMES.
print_result() {
    _partial=false
    if [ -e "$SCRATCH/partial" ]; then _partial=true; fi
    printf 'overhead={"v":1,"release":%s,"runsc_version":%s,"arch":%s,"kernel":%s,"virt":%s,"engine":"%s"' \
        "$(json_string "$1")" "$(json_string "$(timeout "$(cleanup_left)" "$2/runsc" --version 2>/dev/null | sed -n 's/^runsc version //p')")" \
        "$(json_string "$(uname -m)")" "$(json_string "$(uname -r)")" "$(json_string "$(detect_virt)")" "$ENGINE"
    printf ',"budget_s":%d,"runs":%d,"rounds":%d,"partial":%s,"elapsed_s":%s' \
        "$STEP_TIMEOUT" "$RUNS" "$3" "$_partial" "$(($(date +%s) - STEP_START))"
    printf ',"work":{"syscall_bytes":%d,"files":%d,"net_kib":%d}' "$SYSCALL_BYTES" "$FILES" "$((NET_BLOCKS * 64))"
    printf ',"runtimes":{'
    _sep=""
    for _rt in $4; do
        printf '%s"%s":%s' "$_sep" "$_rt" "$(runtime_json "$_rt")"
        _sep=,
    done
    printf '},"skipped":{%s}}\n' "$(paste -sd, "$SCRATCH/skipped")"
}

[ $# -ge 1 ] || die "usage: sh -s -- measure ARGS"
sub=$1
shift
case $sub in
    measure) cmd_measure "$@" ;;
    *) die "usage: sh -s -- measure ARGS" ;;
esac
