#!/bin/sh
# Builds small Debian bookworm VM images (x86_64 and aarch64) for the VM tests
# and benchmark: a root file system from Debian's packages (mmdebstrap), its
# kernel and initrd for direct kernel boot, and cloud-init, so VMs are seeded
# through the same NoCloud path the qemu backend gives users.
#
#   sh tests/toolchain/build-vm-images.sh [x86_64] [aarch64]   build what is missing
#   sh tests/toolchain/build-vm-images.sh --print-dir           print the output directory
#
# Each image is a host with both container engines the program configures:
# Debian's docker.io, and containerd 2 (tests/toolchain/build-containerd.sh,
# built for the image's arch; Debian's 1.6 cannot run the current gVisor shim)
# run by Debian's containerd.service. A busybox image is imported into both at
# boot, before sshd starts, from a static busybox tarball in the image, under the
# name the verify step and the Kubernetes samples use (gvisor-fleet:verifyImage's
# and kubernetes.sampleImage's default), also for the kubelet: no registry.
#
# Output, per arch: $GVISOR_FLEET_CACHE/vm-images/debian12-r$REV/<arch>/
#   vmlinuz, initrd.img, disk.qcow2 (ext4 on the whole disk: root=/dev/vda)
# Build time on 2 cores: see docs/testing.md (Set-up). Needs root, Go (for
# containerd) and the packages of tests/toolchain/install-vm-deps.sh.
set -eu

REV=3 # bump when the image contents change: tests then rebuild
VERIFY_IMAGE=docker.io/library/busybox:1.37 # components/settings.py DEFAULT_VERIFY_IMAGE
SUITE=bookworm
MIRROR=${GVISOR_FLEET_DEBIAN_MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${GVISOR_FLEET_DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
cache=${GVISOR_FLEET_CACHE:-$HOME/.cache/gvisor-fleet}
out="$cache/vm-images/debian12-r$REV"

if [ "${1:-}" = "--print-dir" ]; then
    echo "$out"
    exit 0
fi

log() { printf 'build-vm-images: %s\n' "$*" >&2; }
die() { printf 'build-vm-images: ERROR: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (mmdebstrap chroots, mkfs keeps file owners)"
export PATH="$PATH:/usr/local/go/bin" # Go for containerd 2, where tests/setup.sh finds it
for tool in mmdebstrap mkfs.ext4 qemu-img; do
    command -v "$tool" >/dev/null 2>&1 || die "'$tool' is missing; run: sh tests/toolchain/install-vm-deps.sh"
done

# Foreign-arch packages run their maintainer scripts through qemu-user, which
# the kernel finds through binfmt_misc. Register it when nothing else did
# (containers have no systemd-binfmt).
ensure_binfmt() {
    name=$1
    [ -e "/proc/sys/fs/binfmt_misc/$name" ] && return 0
    [ -e /proc/sys/fs/binfmt_misc/register ] ||
        mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc ||
        die "cannot mount binfmt_misc; foreign-arch images need it"
    [ -e "/proc/sys/fs/binfmt_misc/$name" ] && return 0
    conf="/usr/lib/binfmt.d/$name.conf"
    [ -f "$conf" ] || die "$conf is missing; install qemu-user-static (sh tests/toolchain/install-vm-deps.sh)"
    grep -v '^#' "$conf" > /proc/sys/fs/binfmt_misc/register || die "cannot register $name with binfmt_misc"
    log "registered $name with binfmt_misc"
}

# Setup hook (before any package): keep the initramfs to what a virtio VM
# needs. With Debian's default (MODULES=most) mkinitramfs spends 13+ minutes
# under emulation for arm64. ($1 is the root, expanded by mmdebstrap.)
# shellcheck disable=SC2016
setup_hook='mkdir -p "$1/etc/initramfs-tools/conf.d" "$1/usr/share/initramfs-tools/modules.d" &&
echo MODULES=list > "$1/etc/initramfs-tools/conf.d/gvisor-fleet" &&
printf "%s\n" virtio_pci virtio_mmio virtio_blk virtio_scsi ext4 crc32c_generic > "$1/usr/share/initramfs-tools/modules.d/gvisor-fleet"'

# Customize hook (after all packages): DHCP on the first NIC through
# systemd-networkd, cloud-init limited to the NoCloud seed, and no SSH host
# keys baked in (each VM gets its own, pinned, from its seed).
# shellcheck disable=SC2016
customize_hook='set -e
cat > "$1/etc/systemd/network/50-dhcp.network" <<NET
[Match]
Name=en* eth*

[Network]
DHCP=ipv4
NET
chroot "$1" systemctl enable systemd-networkd >/dev/null 2>&1
# Online once any link is: a LAN NIC (components/fleet/lan.py) matches the DHCP
# file above until cloud-init writes its own, and waiting for its lease would
# hold the first boot for the wait'"'"'s 2 minutes.
mkdir -p "$1/etc/systemd/system/systemd-networkd-wait-online.service.d"
printf "[Service]\nExecStart=\nExecStart=/usr/lib/systemd/systemd-networkd-wait-online --any\n" > "$1/etc/systemd/system/systemd-networkd-wait-online.service.d/any.conf"
cat > "$1/etc/cloud/cloud.cfg.d/90-gvisor-fleet.cfg" <<CFG
datasource_list: [NoCloud, None]
network: {config: disabled}
CFG
echo "/dev/vda / ext4 defaults,errors=remount-ro 0 1" > "$1/etc/fstab"
rm -f "$1"/etc/ssh/ssh_host_*
: > "$1/etc/machine-id"
# containerd 2 replaces 1.6 as the service (Docker then uses it too); the
# package stays for its unit and config.toml, like an upgraded host.
cp "$CONTAINERD_BIN"/containerd "$CONTAINERD_BIN"/ctr "$CONTAINERD_BIN"/containerd-shim-runc-v2 "$1/usr/local/bin/"
mkdir -p "$1/etc/systemd/system/containerd.service.d"
printf "[Service]\nExecStart=\nExecStart=/usr/local/bin/containerd\n" > "$1/etc/systemd/system/containerd.service.d/containerd2.conf"
# The verify image: static busybox as a one-layer root file system.
img="$1/usr/local/share/gvisor-fleet"
mkdir -p "$img/rootfs/bin"
cp "$1/bin/busybox" "$img/rootfs/bin/busybox"
for applet in sh uname dmesg cat head echo ls sleep true; do ln -s busybox "$img/rootfs/bin/$applet"; done
tar -C "$img/rootfs" --owner=0 --group=0 --numeric-owner -cf "$img/busybox-rootfs.tar" .
rm -rf "$img/rootfs"
cat > "$1/usr/local/sbin/gvisor-fleet-test-image" <<SH
#!/bin/sh
# Imports the verify image into Docker and into containerd (namespaces
# gvisor-fleet, and k8s.io for a kubelet), once.
set -eu
docker image inspect $VERIFY_IMAGE >/dev/null 2>&1 ||
    docker import /usr/local/share/gvisor-fleet/busybox-rootfs.tar $VERIFY_IMAGE >/dev/null
for ns in gvisor-fleet k8s.io; do
    ctr -n \$ns images ls -q | grep -qx $VERIFY_IMAGE ||
        docker save $VERIFY_IMAGE | ctr -n \$ns images import - >/dev/null
done
SH
chmod 755 "$1/usr/local/sbin/gvisor-fleet-test-image"
cat > "$1/etc/systemd/system/gvisor-fleet-test-image.service" <<UNIT
[Unit]
Description=Import the gvisor-fleet verify image (no registry in the test VMs)
Requires=docker.service containerd.service
After=docker.service containerd.service
Before=ssh.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/sbin/gvisor-fleet-test-image

[Install]
WantedBy=multi-user.target
UNIT
chroot "$1" systemctl enable gvisor-fleet-test-image.service >/dev/null 2>&1
rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin "$1"/var/log/*.log'

# Unmounts what a killed mmdebstrap left mounted in a build folder (/proc,
# /sys, /dev/pts, ...), deepest first, so removing the folder cannot reach
# into the machine's own trees.
unmount_under() {
    awk -v d="$1/" 'index($5, d) == 1 { print $5 }' /proc/self/mountinfo | sort -r | while read -r m; do
        umount -l "$m" || die "cannot unmount $m; unmount it, then remove $1"
    done
}

remove_build() {
    unmount_under "$1"
    rm -rf "$1"
}

# kill_tree PID: PID and every process under it (apt, dpkg and the
# maintainer scripts mmdebstrap runs), children first.
kill_tree() {
    for child in $(pgrep -P "$1" || :); do
        kill_tree "$child"
    done
    kill -KILL "$1" 2>/dev/null || :
}

# An interrupted build leaves no half-built folder or mount behind, and stops
# at once: mmdebstrap runs in the background, so a signal interrupts the wait
# and its trap stops mmdebstrap's whole tree. (mmdebstrap itself finishes its
# current step before it acts on a TERM: up to a quarter of an hour under
# emulation, with this script's lock held all along.)
work=""
mmdebstrap_pid=""
stop_mmdebstrap() { [ -z "$mmdebstrap_pid" ] || kill_tree "$mmdebstrap_pid"; }
trap '[ -z "$work" ] || [ ! -d "$work" ] || remove_build "$work"' EXIT
trap 'stop_mmdebstrap; exit 130' INT
trap 'stop_mmdebstrap; exit 143' TERM

build_arch() {
    arch=$1
    case $arch in
        x86_64) darch=amd64 ;;
        aarch64) darch=arm64 ;;
        *) die "unknown architecture '$arch' (x86_64 or aarch64)" ;;
    esac
    dest="$out/$arch"
    if [ -f "$dest/.complete" ]; then
        log "cached $dest"
        return 0
    fi
    [ "$(uname -m)" = "$arch" ] || ensure_binfmt "qemu-$arch"
    sh "$(dirname "$0")/build-containerd.sh" --arch "$arch" >&2
    CONTAINERD_BIN=$(sh "$(dirname "$0")/build-containerd.sh" --arch "$arch" --print-dir)
    export CONTAINERD_BIN VERIFY_IMAGE
    work="$out/.build-$arch"
    remove_build "$work" # a build killed with SIGKILL (no trap) may have left one
    mkdir -p "$work"
    start=$(date +%s)
    log "building the $arch root file system with mmdebstrap (Debian $SUITE, $darch)"
    mmdebstrap --quiet --variant=minbase --arch="$darch" \
        --include="systemd-sysv,udev,dbus,openssh-server,iproute2,sudo,kmod,initramfs-tools,linux-image-$darch,cloud-init,curl,ca-certificates,bzip2,procps,docker.io,busybox-static" \
        --dpkgopt='path-exclude=/usr/share/man/*' \
        --dpkgopt='path-exclude=/usr/share/doc/*' \
        --dpkgopt='path-include=/usr/share/doc/*/copyright' \
        --dpkgopt='path-exclude=/usr/share/locale/*' \
        --aptopt='Acquire::Retries "3"' \
        --setup-hook="$setup_hook" \
        --customize-hook="$customize_hook" \
        "$SUITE" "$work/rootfs" \
        "deb $MIRROR $SUITE main" "deb $MIRROR $SUITE-updates main" "deb $SECURITY_MIRROR $SUITE-security main" &
    mmdebstrap_pid=$!
    wait "$mmdebstrap_pid" # its status: a failed mmdebstrap stops the build
    mmdebstrap_pid=""
    kernel=$(find "$work/rootfs/boot" -name 'vmlinuz-*' | sort | tail -n 1)
    initrd=$(find "$work/rootfs/boot" -name 'initrd.img-*' | sort | tail -n 1)
    if [ -z "$kernel" ] || [ -z "$initrd" ]; then die "no kernel or initrd in $work/rootfs/boot"; fi
    cp "$kernel" "$work/vmlinuz"
    cp "$initrd" "$work/initrd.img"
    log "writing the $arch disk (ext4 from the tree, no loop mount)"
    mkfs.ext4 -q -L fleet-root -d "$work/rootfs" "$work/disk.img" 2G
    qemu-img convert -c -O qcow2 "$work/disk.img" "$work/disk.qcow2"
    rm -rf "$work/rootfs" "$work/disk.img"
    echo "debian $SUITE $darch r$REV, built $(date -u +%Y-%m-%dT%H:%M:%SZ) in $(($(date +%s) - start))s" > "$work/BUILD"
    touch "$work/.complete"
    rm -rf "$dest"
    mv "$work" "$dest"
    work=""
    log "built $dest in $(($(date +%s) - start))s ($(du -h "$dest/disk.qcow2" | cut -f1) qcow2)"
}

[ $# -gt 0 ] || set -- x86_64 aarch64
mkdir -p "$out"
# One builder at a time per cache (tests and benchmark may start together).
exec 9> "$out/.lock"
if command -v flock >/dev/null 2>&1; then
    flock 9
fi
for a in "$@"; do
    build_arch "$a"
done
