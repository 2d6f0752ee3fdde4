# shellcheck shell=sh
# KVM: permission bits are not enough: a device cgroup (containers) or a
# nodev mount refuses the read-write open runsc's KVM platform needs; try it.

kvm_opens() {
    [ -c /dev/kvm ] && (: <>/dev/kvm) 2>/dev/null
}
