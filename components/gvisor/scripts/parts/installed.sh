# shellcheck shell=sh
# What is installed in installDir, and its removal (the uninstall step).

# Same release already installed in PREFIX from the same SOURCE (PUBLISHED
# its SHA-512) and untouched: PREFIX SOURCE PUBLISHED.
already_installed() {
    [ -f "$INSTALL_STATE" ] && [ -x "$1/runsc" ] &&
        grep -qx "url=$2" "$INSTALL_STATE" && grep -qx "published=$3" "$INSTALL_STATE" &&
        grep -qx "runsc=$(sha512_of "$1/runsc")" "$INSTALL_STATE" && shim_untouched "$1"
}

# The shim is as installed (a state from before shim= was kept says nothing: untouched).
shim_untouched() {
    grep -q '^shim=' "$INSTALL_STATE" || return 0
    grep -qx "shim=$(shim_digest "$1")" "$INSTALL_STATE"
}

shim_digest() {
    if [ -f "$1/containerd-shim-runsc-v1" ]; then sha512_of "$1/containerd-shim-runsc-v1"; else echo none; fi
}

# Moves a staged release into installDir: PREFIX STAGE SOURCE RELEASE LAYOUT PUBLISHED.
put_in_place() {
    _place_prefix=$1 _place_stage=$2
    checkpoint install:downloaded
    # An upgrade of a verified host keeps what it runs until the new release passes (upgrade.sh).
    if verified_install "$_place_prefix"; then
        check_staged "$_place_stage" "$4"
        keep_previous "$_place_prefix"
    fi
    # Journal first: what was there (or that nothing was), then a state
    # saying the files in installDir are ours, and only then the moves. A
    # re-run after a kill never takes our runsc for the owner's.
    if ! [ -f "$INSTALL_STATE" ]; then
        for _f in runsc containerd-shim-runsc-v1 gvisor-bin; do backup_once "$_place_prefix/$_f" verbatim; done
        checkpoint install:backed-up
    fi
    write_install_state "$_place_prefix" "$3" "$4" "$5" pending
    checkpoint install:journaled
    if [ -d "$_place_stage/gvisor-bin" ]; then
        [ ! -d "$_place_prefix/gvisor-bin" ] || mv "$_place_prefix/gvisor-bin" "$_place_prefix/gvisor-bin.old"
        mv "$_place_stage/gvisor-bin" "$_place_prefix/gvisor-bin"
        rm -rf "$_place_prefix/gvisor-bin.old"
    else
        rm -rf "$_place_prefix/gvisor-bin" # ours, from another release
    fi
    if [ -f "$_place_stage/containerd-shim-runsc-v1" ]; then
        mv -f "$_place_stage/containerd-shim-runsc-v1" "$_place_prefix/containerd-shim-runsc-v1"
    else
        rm -f "$_place_prefix/containerd-shim-runsc-v1" # ours, from another release
    fi
    checkpoint install:shim-moved
    mv -f "$_place_stage/runsc" "$_place_prefix/runsc"
    checkpoint install:runsc-moved
    write_install_state "$_place_prefix" "$3" "$4" "$5" "$6"
    verify_upgrade "$_place_prefix" "$4"
    fact changed true
}

# PREFIX RELEASE LAYOUT
report_installed() {
    fact release "$2"
    fact layout "$3"
    fact runsc_path "$1/runsc"
    fact runsc_version "$("$1/runsc" --version 2>/dev/null | head -n 1 | sed 's/^runsc version //')"
    if [ -x "$1/containerd-shim-runsc-v1" ]; then fact shim yes; else fact shim no; fi
}

# install.state says the files in installDir are ours; "published=pending"
# while they are being moved, so the next run finishes a killed install:
# PREFIX URL RELEASE LAYOUT PUBLISHED.
write_install_state() {
    {
        echo "url=$2"
        echo "release=$3"
        echo "layout=$4"
        echo "published=$5"
        if [ "$5" != pending ]; then
            echo "runsc=$(sha512_of "$1/runsc")"
            echo "shim=$(shim_digest "$1")"
        fi
        echo "prefix=$1"
    } > "$INSTALL_STATE.tmp"
    mv -f "$INSTALL_STATE.tmp" "$INSTALL_STATE"
}

cmd_uninstall() {
    prefix=$1
    begin_step
    rm -rf "$prefix"/.gvisor-fleet.* "$prefix/gvisor-bin.old"
    drop_previous "$prefix"
    # Ours go first and the state after: a kill in between is finished by a re-run.
    if [ -f "$INSTALL_STATE" ]; then
        rm -rf "$prefix/runsc" "$prefix/containerd-shim-runsc-v1" "$prefix/gvisor-bin"
        checkpoint uninstall:removed
        rm -f "$INSTALL_STATE" "$VERIFIED"
    fi
    for f in runsc containerd-shim-runsc-v1 gvisor-bin; do
        if has_backup "$prefix/$f"; then restore_backup "$prefix/$f"; fi
    done
    tidy_state
    log "gVisor removed from $prefix"
}

# Every [runsc_config] key must be a flag the installed runsc accepts, or
# every container creation fails ("flag provided but not defined"): RUNSC FLAG...
check_runsc_flags() {
    _runsc=$1
    shift
    [ -x "$_runsc" ] || die "$_runsc is not installed; the install step must run first"
    _known=$("$_runsc" flags 2>&1 | sed -n 's/^ *-\([A-Za-z0-9_.-]*\).*/\1/p')
    for _k in "$@"; do
        printf '%s\n' "$_known" | grep -qx -- "$_k" ||
            die "runsc $("$_runsc" --version 2>/dev/null | head -n 1 | sed 's/^runsc version //') has no flag '$_k' (from gvisor-fleet:runscFlags or platform/network settings); remove it or pin a release that has it"
    done
}
