# shellcheck shell=sh
# The figures: what is sampled, and how it is summed up.

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

# skip RUNTIME REASON: left out of the figures, named with why (the caller
# drops it from its list: without).
skip() {
    log "$1 not measured: $2"
    printf '%s:%s\n' "$(json_string "$1")" "$(json_string "$2")" >> "$SCRATCH/skipped"
}

# The words of LIST without WORD.
without() { echo " $1 " | sed "s| $2 | |; s/^ *//; s/ *\$//"; }

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
# must start a sandbox on it, within a short bound (its files go to the
# scratch folder): PREFIX, where runsc is.
kvm_usable() {
    kvm_opens &&
        TMPDIR=$SCRATCH timeout "$(($(run_cap) < 15 ? $(run_cap) : 15))" "$1/runsc" --platform=kvm --network=none "do" true >/dev/null 2>&1
}

