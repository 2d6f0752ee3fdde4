#!/bin/sh
# Local VM launcher for the qemu backend (run by a pulumi_command local.Command,
# and by the VM tests directly). POSIX sh.
#
#   qemu-vm.sh start --dir DIR --name NAME --port PORT --host-key 'ssh-ed25519 AAAA...'
#                    --image URL|PATH --cache DIR --meta-data TEXT [--image-checksum sha256:HEX]
#                    [--disk-size 8G] [--timeout SECONDS] -- QEMU_COMMAND...   < user-data
#   qemu-vm.sh stop --dir DIR --name NAME
#   qemu-vm.sh status --dir DIR --name NAME
#   qemu-vm.sh probe-kvm x86_64|aarch64          prints yes when KVM really runs guests
#
# start is idempotent: a VM already running from DIR is only checked. It makes
# DIR/disk.qcow2 (a copy-on-write overlay over the base image, kept across
# restarts of the same VM) and DIR/seed.iso (cloud-init NoCloud: user-data
# from stdin, meta-data from --meta-data), runs the QEMU command (which must
# daemonize with -pidfile DIR/qemu.pid), then waits until SSH on
# 127.0.0.1:PORT answers with exactly the pinned host key. Facts go to stdout
# as key=value lines; progress and errors to stderr.
# stop ends the VM and removes DIR (overlay, seed, logs).
set -eu

log() { printf 'qemu-vm: %s\n' "$*" >&2; }
die() { printf 'qemu-vm: ERROR: %s\n' "$*" >&2; exit 1; }
fact() { printf '%s=%s\n' "$1" "$2"; }
have() { command -v "$1" >/dev/null 2>&1; }

dir="" name="" port="" host_key="" image="" cache="" meta="" checksum="" disk_size="" timeout=900

# The VM's QEMU process, if it is running from this directory.
vm_pid() {
    [ -f "$dir/qemu.pid" ] || return 1
    pid=$(cat "$dir/qemu.pid" 2>/dev/null) || return 1
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
    # A recycled pid belongs to someone else: the command line must name our disk.
    tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -Fq "$dir/disk.qcow2" || return 1
    echo "$pid"
}

serial_tail() {
    [ -f "$dir/serial.log" ] || return 0
    log "last lines of $dir/serial.log:"
    tail -n 25 "$dir/serial.log" | sed 's/^/    /' >&2
}

checksum_ok() {
    file=$1 want=$2
    algo=${want%%:*} hex=${want#*:}
    case $algo in
        sha256) got=$(sha256sum "$file" | cut -d' ' -f1) ;;
        sha512) got=$(sha512sum "$file" | cut -d' ' -f1) ;;
        *) die "unknown checksum '$want' (sha256:HEX or sha512:HEX)" ;;
    esac
    [ "$got" = "$hex" ]
}

# Prints the local path of the base image, downloading a URL once into the cache.
resolve_image() {
    case $image in
        http://* | https://*)
            have curl || die "curl is needed to download $image"
            [ -n "$cache" ] || die "--cache is needed for a downloaded image"
            mkdir -p "$cache"
            key=$(printf '%s' "$image" | sha256sum | cut -c1-16)
            local_path="$cache/$key-$(basename "$image")"
            if ! [ -f "$local_path" ]; then
                log "downloading $image"
                curl -fL --retry 3 --connect-timeout 30 -o "$local_path.part" "$image" ||
                    die "cannot download $image; check the machine's image setting or pre-download it and give its path"
                if [ -n "$checksum" ] && ! checksum_ok "$local_path.part" "$checksum"; then
                    rm -f "$local_path.part"
                    die "$image does not match imageChecksum $checksum; nothing was started"
                fi
                mv "$local_path.part" "$local_path"
            fi
            echo "$local_path"
            ;;
        *)
            [ -f "$image" ] || die "base image $image does not exist"
            if [ -n "$checksum" ] && ! checksum_ok "$image" "$checksum"; then
                die "$image does not match imageChecksum $checksum; nothing was started"
            fi
            echo "$image"
            ;;
    esac
}

make_seed() {
    mkdir -p "$dir/seed"
    cat > "$dir/seed/user-data"
    printf '%s\n' "$meta" > "$dir/seed/meta-data"
    [ -s "$dir/seed/user-data" ] || die "no user-data on stdin"
    if have genisoimage; then
        mkiso=genisoimage
    elif have mkisofs; then
        mkiso=mkisofs
    elif have xorrisofs; then
        mkiso=xorrisofs
    else
        die "genisoimage (or mkisofs/xorrisofs) is needed for the cloud-init seed: apt-get install genisoimage"
    fi
    "$mkiso" -quiet -output "$dir/seed.iso.tmp" -volid cidata -joliet -rock \
        "$dir/seed/user-data" "$dir/seed/meta-data" 2>"$dir/seed.err" ||
        die "cannot write the seed ISO: $(cat "$dir/seed.err")"
    mv -f "$dir/seed.iso.tmp" "$dir/seed.iso"
    # The seed holds the host's private key: keep only the ISO QEMU reads.
    rm -rf "$dir/seed" "$dir/seed.err"
}

# The ed25519 host key SSH on 127.0.0.1:PORT offers now ("ssh-ed25519 AAAA..."), or nothing.
offered_key() {
    ssh-keyscan -T 5 -t ed25519 -p "$port" 127.0.0.1 2>/dev/null | awk '$2 == "ssh-ed25519" { print $2 " " $3; exit }'
}

wait_for_ssh() {
    start_s=$1
    want=$(printf '%s\n' "$host_key" | awk '{ print $1 " " $2 }')
    while :; do
        pid=$(vm_pid) || {
            serial_tail
            die "VM $name stopped while booting (see $dir/serial.log)"
        }
        got=$(offered_key)
        if [ -n "$got" ]; then
            [ "$got" = "$want" ] ||
                die "SSH on 127.0.0.1:$port offers host key '$got', not VM $name's pinned key '$want'; another VM or service holds the port, set machines[].sshPort"
            return 0
        fi
        if [ $(($(date +%s) - start_s)) -ge "$timeout" ]; then
            serial_tail
            die "VM $name: no SSH on 127.0.0.1:$port within ${timeout}s (see $dir/serial.log); raise bootTimeout if the machine is just slow"
        fi
        sleep 2
    done
}

cmd_start() {
    for v in "$dir" "$name" "$port" "$host_key" "$image"; do
        [ -n "$v" ] || die "start needs --dir, --name, --port, --host-key and --image"
    done
    [ $# -gt 0 ] || die "start needs the QEMU command after --"
    have ssh-keyscan || die "ssh-keyscan is needed to check the VM's host key (apt-get install openssh-client)"
    have "$1" || die "$1 is not installed (Debian: apt-get install qemu-system-x86 qemu-system-arm qemu-utils)"
    have qemu-img || die "qemu-img is not installed (apt-get install qemu-utils)"
    umask 077
    mkdir -p "$dir"
    started=$(date +%s)
    if pid=$(vm_pid); then
        log "VM $name is already running (pid $pid)"
        cat > /dev/null # the seed is not needed
    else
        base=$(resolve_image)
        if ! [ -f "$dir/disk.qcow2" ]; then
            format=$(qemu-img info "$base" 2>/dev/null | sed -n 's/^file format: //p')
            [ -n "$format" ] || die "$base is not a disk image qemu-img can read"
            # shellcheck disable=SC2086 # no size means the image's own size
            qemu-img create -q -f qcow2 -F "$format" -b "$(cd "$(dirname "$base")" && pwd)/$(basename "$base")" \
                "$dir/disk.qcow2" $disk_size || die "cannot create the overlay $dir/disk.qcow2"
            cat /proc/sys/kernel/random/uuid > "$dir/instance"
        fi
        make_seed
        rm -f "$dir/qemu.pid" "$dir/serial.log"
        log "starting VM $name ($1), SSH on 127.0.0.1:$port"
        if ! "$@" < /dev/null > "$dir/qemu.log" 2>&1; then
            if grep -q 'hostfwd\|host forwarding' "$dir/qemu.log"; then
                die "VM $name: 127.0.0.1:$port is already in use; stop what holds it or set the machine's sshPort: $(cat "$dir/qemu.log")"
            fi
            die "VM $name: QEMU failed to start: $(cat "$dir/qemu.log")"
        fi
        pid=$(vm_pid) || die "VM $name: QEMU started but wrote no pid file $dir/qemu.pid (-daemonize -pidfile missing?)"
    fi
    wait_for_ssh "$started"
    fact name "$name"
    fact address 127.0.0.1
    fact port "$port"
    fact pid "$(vm_pid)"
    fact instance "$(cat "$dir/instance" 2>/dev/null || echo unknown)"
    fact ssh_seconds $(($(date +%s) - started))
    log "VM $name answers SSH on 127.0.0.1:$port with its pinned host key"
}

cmd_stop() {
    if [ -z "$dir" ] || [ -z "$name" ]; then die "stop needs --dir and --name"; fi
    if pid=$(vm_pid); then
        kill "$pid" 2>/dev/null || true
        i=0
        while kill -0 "$pid" 2>/dev/null && [ $i -lt 30 ]; do
            sleep 1
            i=$((i + 1))
        done
        if kill -0 "$pid" 2>/dev/null; then kill -9 "$pid" 2>/dev/null || true; fi
        log "stopped VM $name (pid $pid)"
    fi
    # Only what this script made: never a directory without our files.
    if [ -d "$dir" ]; then
        rm -f "$dir/disk.qcow2" "$dir/seed.iso" "$dir/seed.iso.tmp" "$dir/serial.log" "$dir/qemu.log" \
            "$dir/qemu.pid" "$dir/instance"
        rm -rf "$dir/seed"
        rmdir "$dir" 2>/dev/null || log "kept $dir: it holds files this script did not make"
    fi
    fact stopped "$name"
}

cmd_status() {
    if [ -z "$dir" ] || [ -z "$name" ]; then die "status needs --dir and --name"; fi
    if pid=$(vm_pid); then
        fact state running
        fact pid "$pid"
    else
        fact state stopped
    fi
}

# A few instructions run as the guest: they exit QEMU with a known status only
# if the CPU really executes them under KVM with a baseline CPU model enforced.
cmd_probe_kvm() {
    arch=${1:-}
    if ! [ -r /dev/kvm ] || ! [ -w /dev/kvm ]; then echo no; return 0; fi
    [ "$(uname -m)" = "$arch" ] || { echo no; return 0; }
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    case $arch in
        x86_64)
            have qemu-system-x86_64 || { echo no; return 0; }
            # 64 KiB firmware; at the reset vector: mov al,0x31; out 0xf4,al; hlt
            { dd if=/dev/zero bs=65520 count=1 2>/dev/null
              printf '\260\061\346\364\364\353\376'
              dd if=/dev/zero bs=9 count=1 2>/dev/null; } > "$tmp/fw.bin"
            status=0
            timeout 30 qemu-system-x86_64 -accel kvm -cpu qemu64,enforce -machine pc -bios "$tmp/fw.bin" \
                -nodefaults -display none -monitor none -serial none \
                -device isa-debug-exit,iobase=0xf4,iosize=0x04 >/dev/null 2>&1 || status=$?
            [ "$status" = 99 ] && echo yes || echo no # (0x31 << 1) | 1
            ;;
        aarch64)
            have qemu-system-aarch64 || { echo no; return 0; }
            # At 0: movz w0,#8; movk w0,#0x8400,lsl 16; hvc #0 (PSCI SYSTEM_OFF); b .
            printf '\000\001\200\122\000\200\260\162\002\000\000\324\000\000\000\024' > "$tmp/fw.bin"
            if timeout 30 qemu-system-aarch64 -accel kvm -machine virt -cpu host -bios "$tmp/fw.bin" \
                -nodefaults -display none -monitor none -serial none >/dev/null 2>&1; then
                echo yes
            else
                echo no
            fi
            ;;
        *) echo no ;;
    esac
}

[ $# -ge 1 ] || die "usage: qemu-vm.sh start|stop|status|probe-kvm ..."
action=$1
shift
if [ "$action" != probe-kvm ]; then
    while [ $# -gt 0 ]; do
        case $1 in
            --) shift; break ;;
            --dir | --name | --port | --host-key | --image | --cache | --meta-data | --image-checksum | \
                --disk-size | --timeout)
                [ $# -ge 2 ] || die "option $1 needs a value"
                case $1 in
                    --dir) dir=$2 ;;
                    --name) name=$2 ;;
                    --port) port=$2 ;;
                    --host-key) host_key=$2 ;;
                    --image) image=$2 ;;
                    --cache) cache=$2 ;;
                    --meta-data) meta=$2 ;;
                    --image-checksum) checksum=$2 ;;
                    --disk-size) disk_size=$2 ;;
                    --timeout) timeout=$2 ;;
                esac
                shift 2
                ;;
            *) die "unknown option '$1'" ;;
        esac
    done
fi
case $action in
    start) cmd_start "$@" ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    probe-kvm) cmd_probe_kvm "$@" ;;
    *) die "unknown action '$action' (start, stop, status, probe-kvm)" ;;
esac
