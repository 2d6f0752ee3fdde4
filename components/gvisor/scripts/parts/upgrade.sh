# shellcheck shell=sh
# An upgrade of a verified host (the install step, when the verify step has
# passed here before): the new runsc must start a sandbox before it goes in;
# the release the host runs is kept until the new one passes the checks the
# verify step last passed here, and is put back when it does not. The step
# then fails, saying why: the host keeps a release that works.

# The verify step's arguments, one a line, written each time it passes.
VERIFIED="$STATE_DIR/verified"
# While an upgrade runs: the install.state of the release the host had (its
# presence says the kept files below are complete) ...
UPGRADE_STATE="$STATE_DIR/upgrade.state"
# ... and its files, in installDir (same file system: putting back is a rename).
PREVIOUS=.gvisor-fleet-previous

# Records how this host passed verify (only where our release is installed): ARGS.
record_verified() {
    [ -f "$INSTALL_STATE" ] || return 0
    printf '%s\n' "$@" > "$VERIFIED.tmp"
    mv -f "$VERIFIED.tmp" "$VERIFIED"
}

# True when PREFIX holds our release, installed in full and verified since.
verified_install() {
    [ -f "$VERIFIED" ] && [ -f "$INSTALL_STATE" ] && ! grep -qx 'published=pending' "$INSTALL_STATE" &&
        grep -qx "prefix=$1" "$INSTALL_STATE"
}

release_in() { sed -n 's/^release=//p' "$1"; }

# The staged runsc of a new RELEASE must start a sandbox here before it
# replaces the one the host runs: STAGE RELEASE.
check_staged() {
    _staged=$(make_scratch)
    verify_runsc "$_staged" "$(uname -r)" "$1" > "$_staged/facts" ||
        die "the runsc of gVisor $2 does not start a sandbox on this host (see the log above); nothing was changed, gVisor $(release_in "$INSTALL_STATE") stays installed"
}

# Keeps the release PREFIX runs beside it (hard links where the file system
# allows: no copy of tens of MB), then notes the upgrade: PREFIX.
keep_previous() {
    rm -rf "${1:?}/$PREVIOUS"
    mkdir "$1/$PREVIOUS"
    for _f in runsc containerd-shim-runsc-v1 gvisor-bin; do
        [ -e "$1/$_f" ] || continue
        cp -al "$1/$_f" "$1/$PREVIOUS/" 2>/dev/null || cp -a "$1/$_f" "$1/$PREVIOUS/"
        echo "$_f" >> "$1/$PREVIOUS/.held"
    done
    cp "$INSTALL_STATE" "$UPGRADE_STATE.tmp"
    mv -f "$UPGRADE_STATE.tmp" "$UPGRADE_STATE"
    checkpoint upgrade:kept
}

# After the new RELEASE is in place in PREFIX: the checks the verify step
# last passed; the kept release goes when they pass, comes back when not.
verify_upgrade() {
    [ -f "$UPGRADE_STATE" ] || return 0
    checkpoint upgrade:installed
    _upgrade_out=$(make_scratch)
    if recorded_checks > "$_upgrade_out/new"; then
        drop_previous "$1" # (no log line: a step's output stays in the state)
        return 0
    fi
    # shellcheck disable=SC2154 # failed: set by verify_checks (verify.sh)
    _upgrade_failed=$failed _upgrade_was=$(release_in "$UPGRADE_STATE")
    put_previous_back "$1"
    if recorded_checks > "$_upgrade_out/again"; then
        _upgrade_now="which passes verify again"
    else
        _upgrade_now="which fails verify too now, for:$failed (see the log above)"
    fi
    die "gVisor $2 failed verify on this host for:$_upgrade_failed (see the log above); rolled back to gVisor $_upgrade_was, $_upgrade_now"
}

# The verify step's checks, with the arguments it last passed with.
recorded_checks() {
    set --
    while IFS= read -r _arg; do set -- "$@" "$_arg"; done < "$VERIFIED"
    verify_checks "$@"
}

# Puts the kept release back into PREFIX, where a killed run may have
# left it half-way: each kept file moved back (one already back is not in
# the folder any more), each file it did not have removed, its state last.
put_previous_back() {
    for _f in runsc containerd-shim-runsc-v1 gvisor-bin; do
        if grep -qx "$_f" "$1/$PREVIOUS/.held" 2>/dev/null; then
            [ -e "$1/$PREVIOUS/$_f" ] || continue
            if [ "$(stat -c %d:%i "$1/$PREVIOUS/$_f")" = "$(stat -c %d:%i "$1/$_f" 2>/dev/null)" ]; then
                rm -rf "${1:?}/$PREVIOUS/$_f" # the new release never went in
            elif [ -d "$1/$PREVIOUS/$_f" ]; then
                rm -rf "${1:?}/$_f.old"
                [ ! -e "$1/$_f" ] || mv "$1/$_f" "$1/$_f.old"
                mv "$1/$PREVIOUS/$_f" "$1/$_f"
                rm -rf "${1:?}/$_f.old"
            else
                mv -f "$1/$PREVIOUS/$_f" "$1/$_f"
            fi
        else
            rm -rf "${1:?}/$_f"
        fi
    done
    checkpoint upgrade:put-back
    cp "$UPGRADE_STATE" "$INSTALL_STATE.tmp"
    mv -f "$INSTALL_STATE.tmp" "$INSTALL_STATE"
    drop_previous "$1"
}

# The note first: without it, a kept folder is leftovers.
drop_previous() {
    rm -f "$UPGRADE_STATE"
    rm -rf "${1:?}/$PREVIOUS"
}

# An upgrade killed before it was verified: the kept release goes back in
# (the new one is tried again from the start): PREFIX.
finish_killed_upgrade() {
    if [ -f "$UPGRADE_STATE" ] && [ -d "$1/$PREVIOUS" ]; then
        log "an upgrade was stopped before it passed verify; putting gVisor $(release_in "$UPGRADE_STATE") back"
        put_previous_back "$1"
    fi
    drop_previous "$1"
}
