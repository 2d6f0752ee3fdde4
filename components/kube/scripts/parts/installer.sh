# shellcheck shell=sh
# The installer's steps: the agent on the node, the node's labels, its story.

# The agent as the DaemonSet was made with it, copied to the node; its copy
# checks itself against the hash in its name again before every step. Any
# other agent is refused: REFUSE (a function) tells the node why first.
copy_agent() {
    _sum=$(sha256sum < "$AGENT")
    _sum=${_sum%% *}
    if [ "$_sum" != "$AGENT_SHA256" ]; then
        "$1" "the agent in the ConfigMap is not the one this DaemonSet was made with" || true
        die "the agent in the ConfigMap has SHA-256 $_sum, not $AGENT_SHA256 this DaemonSet was made with; run pulumi up to put it back"
    fi
    _name=gvisor-host-$(printf '%.16s' "$_sum")
    mkdir -p "$POD_DIR"
    cp "$AGENT" "$POD_DIR/.$_name.tmp"
    mv "$POD_DIR/.$_name.tmp" "$POD_DIR/$_name"
    NODE_AGENT="$NODE_DIR/$_name"
}

# A command in the node's own mount, UTS, IPC, network and PID namespaces
# (the pod shares the node's PID namespace: PID 1 is the node's init).
on_node() {
    nsenter -t 1 -m -u -i -n -p -- "$@"
}

# One line of a steps file (shell words, quoted by the program) run by the
# agent on the node; its facts are kept in $FACTS, its errors in $ERRORS.
agent_line() {
    eval "set -- $1"
    log "agent $1"
    _rc=0
    # Not the steps file on stdin: the agent must not read the lines after its own.
    on_node sh "$NODE_AGENT" "$@" < /dev/null >> "$FACTS" 2> "$ERRORS" || _rc=$?
    cat "$ERRORS" >&2
    return "$_rc"
}

# The agent's last error line, else a fallback: why the node is not verified.
# Its advice to fetch the release once and copy it over SSH does not apply
# to a node without SSH, and is left out.
last_error() {
    _why=$(sed -n 's/^[a-z0-9-]*: ERROR: //p' "$ERRORS" | tail -n 1 |
        sed 's/,* or set gvisor-fleet:releaseFetch to once so hosts need no internet//')
    printf '%s' "${_why:-$1}"
}

fact_of() {
    sed -n "s/^$1=//p" "$FACTS" | tail -n 1
}

# Text as a JSON string body: no control characters, quotes and backslashes escaped.
json_text() {
    printf '%s' "$1" | tr -d '\000-\037' | sed 's/\\/\\\\/g; s/"/\\"/g' | cut -c 1-1000
}

# One merge patch of the node's own labels and annotations: LABEL_JSON
# ANNOTATION_JSON (null removes a key). The API server's admission policy
# refuses any other key, and any other node.
patch_node() {
    kubectl patch node "$NODE_NAME" --type merge \
        -p "{\"metadata\":{\"labels\":{$1},\"annotations\":{$2}}}" >/dev/null
}

# An Event on the node (in EVENT_NAMESPACE, where the API server keeps
# Events about cluster-scoped objects): TYPE REASON MESSAGE.
node_event() {
    _uid=$(kubectl get node "$NODE_NAME" -o jsonpath='{.metadata.uid}' 2>/dev/null || true)
    _now=$(date -u +%Y-%m-%dT%H:%M:%SZ)
    kubectl create -f - >/dev/null <<JSON || log "could not record the event (the outcome is on the node's annotations)"
{"apiVersion":"v1","kind":"Event","metadata":{"generateName":"gvisor-fleet-installer.","namespace":"$EVENT_NAMESPACE"},
 "involvedObject":{"apiVersion":"v1","kind":"Node","name":"$NODE_NAME","uid":"$_uid"},
 "type":"$1","reason":"$2","message":"$(json_text "$3")","source":{"component":"gvisor-fleet-installer","host":"$NODE_NAME"},
 "firstTimestamp":"$_now","lastTimestamp":"$_now","count":1}
JSON
}

# The node stays unlabelled and says why: pod log, Event, annotation.
refuse_node() {
    rm -f "$READY_FILE"
    log "node $NODE_NAME NOT verified: $1"
    patch_node "\"$NODE_LABEL\":null,\"$RELEASE_LABEL\":null" \
        "\"$STATE_ANNOTATION\":\"failed\",\"$REASON_ANNOTATION\":\"$(json_text "$1")\"" ||
        log "could not annotate node $NODE_NAME"
    node_event Warning GvisorInstallFailed "gVisor not installed on node $NODE_NAME: $1"
}

# GKE Sandbox nodes (label sandbox.gke.io/runtime=gvisor) already run gVisor,
# GKE's way: used as they are, never changed. They serve this RuntimeClass
# only when its handler is GKE's.
gke_sandbox() {
    _value=$(kubectl get node "$NODE_NAME" -o "jsonpath={.metadata.labels.sandbox\.gke\.io/runtime}")
    [ "$_value" = gvisor ] || return 1
    if [ "$HANDLER" = gvisor ]; then
        patch_node "\"$NODE_LABEL\":\"verified\",\"$RELEASE_LABEL\":\"gke-sandbox\"" \
            "\"$STATE_ANNOTATION\":\"gke-sandbox\",\"$REASON_ANNOTATION\":null"
        : > "$READY_FILE"
        log "node $NODE_NAME runs GKE Sandbox: used as it is"
        node_event Normal GvisorGkeSandbox "node $NODE_NAME runs GKE Sandbox; used as it is, not modified"
    else
        refuse_node "the node runs GKE Sandbox, whose containerd runtime is 'gvisor', not '$HANDLER'; set gvisor-fleet:runtimeName to gvisor to use it (the node is left as it is)"
    fi
    return 0
}

# Why this node's layout cannot be handled safely, or nothing. The kubelet
# must run pods through the containerd the agent configures: a node whose
# runtime is another (CRI-O, cri-dockerd) or a node without systemd is
# refused, never half-done. k3s and RKE2 nodes are the agent's to tell apart
# (their template, socket and service: its containerd layouts).
layout_problem() {
    _runtime=$(kubectl get node "$NODE_NAME" -o 'jsonpath={.status.nodeInfo.containerRuntimeVersion}' 2>/dev/null || true)
    case $_runtime in
        containerd://* | "") ;;
        *)
            printf "the node's container runtime is %s, not containerd; gVisor is installed for containerd only" "$_runtime"
            return 0
            ;;
    esac
    # systemd restarts containerd in a cgroup of its own; another service
    # manager would start it as a child of this pod, and it would stop with it.
    if ! on_node test -d "$SYSTEMD_DIR"; then
        printf "the node's services are not run by systemd: a containerd restarted from this pod would stop with the pod"
        return 0
    fi
    return 1
}

cmd_install() {
    FACTS=$(mktemp)
    ERRORS=$(mktemp)
    rm -f "$READY_FILE"
    wait_for "the API server" 120 kubectl get node "$NODE_NAME" ||
        die "cannot read node $NODE_NAME through the API server within 120 s; check that the pod reaches the API server (kubectl logs shows its errors when run by hand: kubectl get node $NODE_NAME)"
    if gke_sandbox; then return 0; fi
    if _why=$(layout_problem); then
        refuse_node "$_why"
        return 0
    fi
    _arch=$(uname -m)
    _steps="$CONFIG_DIR/steps-$_arch"
    if [ ! -f "$_steps" ]; then
        refuse_node "no steps for architecture $_arch: gVisor releases are built for x86_64 and aarch64 only"
        return 0
    fi
    copy_agent refuse_node
    while IFS= read -r _line; do
        [ -n "$_line" ] || continue
        if ! agent_line "$_line"; then
            refuse_node "$(last_error "the agent's step failed: $_line")"
            return 0
        fi
    done < "$_steps"
    if [ "$(fact_of runsc_ok)" != true ] || [ "$(fact_of containerd_ok)" != true ]; then
        refuse_node "verify did not run a container under gVisor through containerd (runsc_ok=$(fact_of runsc_ok), containerd_ok=$(fact_of containerd_ok))"
        return 0
    fi
    patch_node "\"$NODE_LABEL\":\"verified\",\"$RELEASE_LABEL\":\"$RELEASE\"" \
        "\"$STATE_ANNOTATION\":\"verified\",\"$REASON_ANNOTATION\":null"
    : > "$READY_FILE"
    log "node $NODE_NAME verified: gVisor $(fact_of runsc_version) through containerd; labelled $NODE_LABEL=verified"
    node_event Normal GvisorVerified "gVisor $RELEASE installed and verified on node $NODE_NAME"
}

# The node could not be put back: no sandbox may land on it any more, and it
# says why (its annotations, an Event, the pod's log) before the pod goes.
restore_failed() {
    patch_node "\"$NODE_LABEL\":null,\"$RELEASE_LABEL\":null" \
        "\"$STATE_ANNOTATION\":\"restore-failed\",\"$REASON_ANNOTATION\":\"$(json_text "$1")\"" || true
    node_event Warning GvisorRestoreFailed "gVisor could not be removed from node $NODE_NAME: $1"
    die "node $NODE_NAME not restored: $1"
}

# On its pod's stop: only when the cleanup DaemonSet itself is being deleted
# (destroy, or the installer turned off) is the node put back as found; a pod
# merely restarted, evicted or rescheduled leaves the node alone.
cmd_cleanup() {
    ERRORS=$(mktemp)
    FACTS=$(mktemp)
    if _deleted=$(kubectl get daemonset -n "$POD_NAMESPACE" "$CLEANUP_DAEMONSET" \
        -o jsonpath='{.metadata.deletionTimestamp}' 2> "$ERRORS"); then
        if [ -z "$_deleted" ]; then
            log "pod stopping, DaemonSet $CLEANUP_DAEMONSET stays: node $NODE_NAME left as it is"
            return 0
        fi
    elif ! grep -q NotFound "$ERRORS"; then
        log "cannot tell whether DaemonSet $CLEANUP_DAEMONSET is being deleted ($(cat "$ERRORS")): node $NODE_NAME left as it is"
        return 0
    fi
    if [ "$(kubectl get node "$NODE_NAME" -o "jsonpath={.metadata.annotations.gvisor-fleet/install-state}" 2>/dev/null || true)" = gke-sandbox ]; then
        log "node $NODE_NAME runs GKE Sandbox: nothing of ours to remove but the labels"
    else
        copy_agent restore_failed
        while IFS= read -r _line; do
            [ -n "$_line" ] || continue
            agent_line "$_line" || restore_failed "$(last_error "the agent's step failed: $_line")"
        done < "$CONFIG_DIR/restore"
        rm -rf "$POD_DIR"/gvisor-host-* "$POD_DIR"/.gvisor-host-*
    fi
    patch_node "\"$NODE_LABEL\":null,\"$RELEASE_LABEL\":null" "\"$STATE_ANNOTATION\":null,\"$REASON_ANNOTATION\":null"
    log "node $NODE_NAME put back as found: gVisor removed, containerd's config restored, labels removed"
}

# Sleeps until told to stop, then runs $1 (a function) before leaving.
wait_for_stop() {
    # shellcheck disable=SC2064 # the handler's name is fixed now, on purpose
    trap "$1; exit 0" TERM INT
    # The sleeper goes too (outside a pod, nothing else would end it).
    trap 'kill "$SLEEPER" 2>/dev/null || true' EXIT
    while :; do
        sleep 3600 &
        SLEEPER=$!
        wait "$SLEEPER" || true
    done
}
