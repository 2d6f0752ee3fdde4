# shellcheck shell=sh
# The verify step: a sandbox through runsc itself and through each engine.

# One sandbox answers all three questions: its kernel release, the first line
# of its boot log, and whether the host's kernel symbols are visible.
PROBE='uname -r; dmesg 2>/dev/null | head -n 1; if cat /proc/kallsyms >/dev/null 2>&1; then echo kallsyms-readable; else echo kallsyms-absent; fi'

# LABEL OUT HOST_KERNEL: the facts of one probe's output; true when it ran under gVisor.
report_probe() {
    _sandbox_kernel=$(sed -n 1p "$2")
    _banner=$(sed -n 2p "$2")
    _kallsyms=$(sed -n 3p "$2")
    fact "${1}_sandbox_kernel" "$_sandbox_kernel"
    fact "${1}_banner" "$_banner"
    fact "${1}_kallsyms" "${_kallsyms#kallsyms-}"
    _ok=true
    [ -n "$_sandbox_kernel" ] && [ "$_sandbox_kernel" != "$3" ] || _ok=false
    case $_banner in *"Starting gVisor"*) ;; *) _ok=false ;; esac
    [ "$_kallsyms" = kallsyms-absent ] || _ok=false
    fact "${1}_ok" "$_ok"
    [ "$_ok" = true ]
}

ensure_ctr_image() {
    ctr -n "$CTR_NAMESPACE" images ls -q 2>/dev/null | grep -qx -- "$1" && return 0
    if have docker && docker image inspect "$1" >/dev/null 2>&1; then
        docker save "$1" | ctr -n "$CTR_NAMESPACE" images import - >/dev/null
    else
        ctr -n "$CTR_NAMESPACE" images pull "$1" >/dev/null
    fi
}

# RUNTIME IMAGE DOCKER_MODE CONTAINERD_MODE PREFIX RUNSC_TOML. What passed is
# recorded: an upgrade checks the new release the same way (upgrade.sh).
cmd_verify() {
    begin_step
    verify_checks "$@" || die "gVisor verification failed for:$failed (see the facts above)"
    record_verified "$@"
}

# Every check, as for cmd_verify; FAILED names those that failed.
verify_checks() {
    _host_kernel=$(uname -r)
    fact host_kernel "$_host_kernel"
    _checks=$(make_scratch)
    use_configured_address
    failed=""
    verify_runsc "$_checks" "$_host_kernel" "$5" || failed="$failed runsc"
    if [ "$3" != off ] && have docker; then
        verify_docker "$_checks" "$_host_kernel" "$1" "$2" || failed="$failed docker"
    else
        fact docker_ok skipped
    fi
    if [ "$4" != off ] && have containerd && have ctr; then
        verify_containerd "$_checks" "$_host_kernel" "$2" "$6" || failed="$failed containerd"
    else
        fact containerd_ok skipped
    fi
    [ -z "$failed" ]
}

# runsc itself, no container engine or image needed: the host's own file
# system, read-only, inside a sandbox: TMP HOST_KERNEL PREFIX.
verify_runsc() {
    if timeout "$VERIFY_TIMEOUT" "$3/runsc" --network=none "do" sh -c "$PROBE" > "$1/do.out" 2>"$1/do.err"; then
        report_probe runsc "$1/do.out" "$2"
    else
        log "runsc do failed: $(tail -n 3 "$1/do.err")"
        fact runsc_ok false
        return 1
    fi
}

# TMP HOST_KERNEL RUNTIME IMAGE
verify_docker() {
    if ! docker image inspect "$4" >/dev/null 2>&1; then
        docker pull -q "$4" >/dev/null 2>&1 || log "cannot pull $4 for Docker"
    fi
    if timeout "$VERIFY_TIMEOUT" docker run --rm --runtime="$3" --network=none "$4" sh -c "$PROBE" \
        > "$1/docker.out" 2>"$1/docker.err"; then
        report_probe docker "$1/docker.out" "$2"
    else
        log "docker run --runtime=$3 failed: $(tail -n 3 "$1/docker.err")"
        fact docker_ok false
        return 1
    fi
}

# TMP HOST_KERNEL IMAGE RUNSC_TOML. Without CRI's container-type annotation,
# current shims treat the task as a subcontainer and wait forever on `runsc
# create` (gvisor#12198). The trailing sleep lets the shim's `runsc wait`
# attach before the sandbox exits; a faster probe can end with status 128.
verify_containerd() {
    _name="gvisor-fleet-verify-$$"
    if ensure_ctr_image "$3" 2>"$1/ctr.err" &&
        timeout "$VERIFY_TIMEOUT" ctr -n "$CTR_NAMESPACE" run --rm --runtime io.containerd.runsc.v1 \
            --runtime-config-path "$4" --annotation io.kubernetes.cri.container-type=sandbox \
            "$3" "$_name" sh -c "$PROBE; sleep 1" > "$1/ctr.out" 2>>"$1/ctr.err"; then
        report_probe containerd "$1/ctr.out" "$2"
        return
    fi
    log "ctr run --runtime io.containerd.runsc.v1 failed: $(tail -n 3 "$1/ctr.err")"
    # containerd 1.6 tries to dial the JSON bootstrap reply as a socket path.
    if grep -aq 'dial unix.*"protocol":"ttrpc"' "$1/ctr.err"; then
        log "this gVisor release's shim speaks containerd 2's shim protocol, which containerd $(containerd_version) does not; upgrade containerd or pin an older gVisor release"
    fi
    # A sandbox that never finished must not stay behind.
    ctr -n "$CTR_NAMESPACE" tasks kill -s SIGKILL "$_name" >/dev/null 2>&1 || true
    ctr -n "$CTR_NAMESPACE" tasks rm -f "$_name" >/dev/null 2>&1 || true
    ctr -n "$CTR_NAMESPACE" containers rm "$_name" >/dev/null 2>&1 || true
    fact containerd_ok false
    return 1
}
