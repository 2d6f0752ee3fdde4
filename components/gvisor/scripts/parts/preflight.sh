# shellcheck shell=sh
# The preflight step: what the host is, and whether gVisor can run on it.

cgroup_version() {
    if [ "$(stat -fc %T /sys/fs/cgroup 2>/dev/null)" = cgroup2fs ]; then
        echo 2
    else
        echo 1
    fi
}

kvm_usable() { if kvm_opens; then echo yes; else echo no; fi; }

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
    [ "$(id -u)" = 0 ] || die "must run as root (set the machine's user to root or give it passwordless sudo)"
    fact arch "$(uname -m)"
    fact kernel "$(uname -r)"
    fact page_size "$(getconf PAGESIZE 2>/dev/null || echo unknown)"
    fact cgroup_version "$(cgroup_version)"
    if [ -d /run/systemd/system ]; then fact init systemd; else fact init other; fi
    fact kvm "$(kvm_usable)"
    use_layout # (k3s's and RKE2's containerd is not on PATH)
    _dv=$(docker_version) _cv=$(containerd_version)
    fact docker_version "${_dv:-absent}"
    fact containerd_version "${_cv:-absent}"
    check_machine "$1" "$2"
    check_engines "$3" "$4" "$_dv" "$_cv"
    for tool in sha512sum tar mktemp timeout; do
        have "$tool" || die "'$tool' is missing on this host; install coreutils/tar"
    done
    have curl || have wget || die "neither curl nor wget is installed; install one of them"
}

# EXPECTED_ARCH PLATFORM: the architecture, the kernel and the platform.
check_machine() {
    _arch=$(uname -m) _kernel=$(uname -r)
    case $_arch in
        x86_64 | aarch64) ;;
        *) die "unsupported architecture '$_arch': gVisor runs on x86_64 and aarch64 only" ;;
    esac
    if [ "$1" != detect ] && [ "$1" != "$_arch" ]; then
        die "machine reports architecture '$_arch' but the stack asked for '$1'; fix the machine's 'arch' setting"
    fi
    _major=${_kernel%%.*}
    _rest=${_kernel#*.}
    _minor=${_rest%%[!0-9]*}
    if [ "$_major" -lt 4 ] || { [ "$_major" -eq 4 ] && [ "$_minor" -lt 14 ]; }; then
        die "kernel $_kernel is too old for gVisor's systrap platform (needs 4.14 or newer)"
    fi
    if [ "$2" = kvm ] && [ "$(kvm_usable)" = no ]; then
        die "platform 'kvm' needs a read-write /dev/kvm, which this machine lacks; set gvisor-fleet:platform to systrap"
    fi
}

# DOCKER_MODE CONTAINERD_MODE DOCKER_VERSION CONTAINERD_VERSION (empty: not installed).
check_engines() {
    if [ "$1" = required ] && [ -z "$3" ]; then
        die "Docker is required (gvisor-fleet:docker=required) but dockerd is not installed"
    fi
    if [ "$2" = required ] && [ -z "$4" ]; then
        die "containerd is required (gvisor-fleet:containerd=required) but it is not installed"
    fi
    if { [ "$1" != off ] && [ -n "$3" ]; } || { [ "$2" != off ] && [ -n "$4" ]; }; then
        service_manager >/dev/null ||
            die "this host has neither systemd nor a 'service' command, so Docker and containerd cannot be restarted with gVisor; install one, or set gvisor-fleet:docker and gvisor-fleet:containerd to off"
    fi
    if [ "$1" != off ] && [ -n "$3" ] && apparmor_blocks_docker "$3"; then
        die "Docker $3 on this host cannot start any container: the kernel has AppArmor on and apparmor_parser is missing (Docker before 23.0 does not check for it); install the 'apparmor' package, boot with apparmor=0, or set gvisor-fleet:docker to off"
    fi
}
