#!/bin/sh
# PID 1 of the sandbox (see start.sh): builds its file system view, then waits.
set -eu
work=$1
here=$(cd "$(dirname "$0")" && pwd)
hostname gvisor-fleet-sandbox

# Writable copies of every directory the agent or an engine may write: the
# machine's own stay as they are (containerd creates /opt/containerd, a
# configured data-root may sit in /srv, the docker CLI writes ~/.docker).
for d in /etc /usr/local /var/lib /var/log /var/cache /var/tmp /opt /srv /home /root; do
    [ -d "$d" ] || continue
    key=$(echo "$d" | tr / _)
    mkdir -p "$work/upper$key" "$work/overlay-work$key"
    mount -t overlay overlay -o "lowerdir=$d,upperdir=$work/upper$key,workdir=$work/overlay-work$key" "$d"
done
# Image stores must sit on a real file system (overlay-on-overlay fails).
for d in /var/lib/docker /var/lib/containerd; do
    key=$(echo "$d" | tr / _)
    mkdir -p "$work/data$key" "$d"
    mount --bind "$work/data$key" "$d"
done
mount -t tmpfs tmpfs /run
mkdir -p /run/systemd/system /run/lock

# cgroup views rooted at this sandbox's own cgroups.
mount -t tmpfs cgroup-root /sys/fs/cgroup
while IFS=: read -r _ controllers _; do
    case $controllers in
        "") mkdir -p /sys/fs/cgroup/unified && mount -t cgroup2 none /sys/fs/cgroup/unified ;;
        name=*) n=${controllers#name=}; mkdir -p "/sys/fs/cgroup/$n" && mount -t cgroup -o "none,name=$n" cgroup "/sys/fs/cgroup/$n" ;;
        *) mkdir -p "/sys/fs/cgroup/$controllers" && mount -t cgroup -o "$controllers" cgroup "/sys/fs/cgroup/$controllers" ;;
    esac
done < /proc/self/cgroup

ip link set lo up
install -m 0755 "$here/systemctl" "$here/journalctl" "$here/rancher-service.sh" /usr/local/sbin/
echo ready > "$work/ready"
exec sleep infinity
