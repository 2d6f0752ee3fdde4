#!/bin/sh
# Starts a throwaway "host" for the host tests: private mount, network, PID,
# cgroup, UTS and IPC namespaces, with /etc, /usr/local, /var/{lib,log,cache,tmp},
# /opt, /srv, /home and /root behind overlays whose upper layers live in WORK
# (see init.sh). Docker, containerd and the gVisor
# agent can do anything in it; the real machine keeps its files, network and
# cgroup tree (everything lands under a child of this process's own cgroups).
#   sh start.sh WORK     (runs until killed; prints nothing on success)
set -eu
work=$1
here=$(cd "$(dirname "$0")" && pwd)
id=gvisor-fleet-sandbox-$$
mkdir -p "$work"
: > "$work/cgroups"

# Join a fresh child cgroup in every hierarchy, so the cgroup namespace below
# is rooted there and teardown can remove all the sandbox made.
while IFS=: read -r _ controllers path; do
    case $controllers in
        "") mnt=$(findmnt -rn -t cgroup2 -o TARGET | head -n 1) ;;
        name=*) mnt=/sys/fs/cgroup/${controllers#name=} ;;
        *) mnt=/sys/fs/cgroup/$controllers ;;
    esac
    if [ -z "$mnt" ] || [ ! -d "$mnt$path" ]; then continue; fi
    dir="$mnt${path%/}/$id"
    mkdir -p "$dir"
    # A cpuset v1 child takes no tasks until it has CPUs and memory nodes.
    for f in cpuset.cpus cpuset.mems; do
        [ -f "$dir/$f" ] && cat "$(dirname "$dir")/$f" > "$dir/$f"
    done
    echo $$ > "$dir/cgroup.procs"
    echo "$dir" >> "$work/cgroups"
done < /proc/self/cgroup

exec unshare --mount --net --pid --cgroup --uts --ipc --fork --mount-proc --propagation private \
    sh "$here/init.sh" "$work"
