# shellcheck shell=sh
# Atomic writes: a file is replaced whole or not at all.

# Replaces a file atomically with the contents of another (same filesystem):
# SRC DST. Through a symlink: the link is the owner's layout, so its target is
# written. The temporary name is fixed: the step lock makes it ours, and the
# next step removes one a killed step left (drop_leftovers).
replace_file() {
    _replace_src=$1 _replace_dst=$2
    [ ! -L "$_replace_dst" ] || _replace_dst=$(readlink -f "$_replace_dst")
    mkdir -p "$(dirname "$_replace_dst")"
    cp "$_replace_src" "$_replace_dst.gvisor-fleet.tmp" 2>/dev/null || write_failed "$_replace_dst"
    if [ -e "$_replace_dst" ]; then
        chmod --reference="$_replace_dst" "$_replace_dst.gvisor-fleet.tmp" 2>/dev/null || true
    fi
    mv -f "$_replace_dst.gvisor-fleet.tmp" "$_replace_dst"
}

# A write that failed: say plainly when the file system is full.
write_failed() {
    rm -f "$1.gvisor-fleet.tmp"
    _free=$(df -Pk "$(dirname "$1")" 2>/dev/null | awk 'NR == 2 { print $4 }')
    if [ -n "$_free" ] && [ "$_free" -lt 1024 ]; then
        die "cannot write $1: the file system holding it is full (${_free} KiB free); free some space and run again"
    fi
    die "cannot write $1"
}

# The temporary files a killed step left beside FILE...
drop_leftovers() {
    for _left in "$@"; do
        [ ! -L "$_left" ] || _left=$(readlink -f "$_left")
        rm -f "$_left.gvisor-fleet.tmp" "$_left.gvisor-fleet.new"
    done
}
