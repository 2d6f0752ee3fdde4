# shellcheck shell=sh
# The install step: the release fetched and checked, then moved into installDir.

# Fetches the release's checksum files from URL into DIR and prints the
# layout found: "archive" (gvisor.tar.bz2, releases since 2026-08) or "loose" (older).
detect_layout() {
    have curl || have wget || die "neither curl nor wget is installed; install one of them to download gVisor"
    if fetch "$1/gvisor.tar.bz2.sha512" "$2/gvisor.tar.bz2.sha512" "$RELEASE_SETTING" "$OFFLINE_FIX"; then
        echo archive
    elif fetch "$1/runsc.sha512" "$2/runsc.sha512" "$RELEASE_SETTING" "$OFFLINE_FIX"; then
        echo loose
    else
        die "gVisor release not found at $1/ (neither gvisor.tar.bz2.sha512 nor runsc.sha512; the server answered, the release is not there); check gvisor-fleet:release and gvisor-fleet:baseUrl"
    fi
}

# The files of a LAYOUT at URL, fetched into DIR (a loose release's shim,
# when it has one, is found here): URL DIR LAYOUT PINNED_SHA.
release_files() {
    if [ "$3" = archive ]; then
        echo gvisor.tar.bz2
        return 0
    fi
    # One pinned hash cannot cover two separately published files.
    [ "$4" = - ] ||
        die "$1 uses the legacy loose layout (runsc and the shim published separately), which one gvisor-fleet:sha512 pin cannot cover; pin a release published as gvisor.tar.bz2 (since 20260831) or remove the pin"
    # Releases before 2019 published no shim; containerd then cannot use gVisor.
    if fetch "$1/containerd-shim-runsc-v1.sha512" "$2/containerd-shim-runsc-v1.sha512" "$RELEASE_SETTING" "$OFFLINE_FIX"; then
        echo "runsc containerd-shim-runsc-v1"
    else
        log "$1 has no containerd-shim-runsc-v1; containerd will not be able to run gVisor"
        echo runsc
    fi
}

# Downloads and checks the release into DIR/stage (runsc, shim, gvisor-bin/):
# URL DIR LAYOUT PINNED_SHA.
download_release() {
    _files=$(release_files "$@")
    _first=${_files%% *}
    if [ "$4" != - ]; then
        _published=$(cut -d' ' -f1 "$2/$_first.sha512")
        [ "$_published" = "$4" ] ||
            die "$1/$_first.sha512 says $_published, but gvisor-fleet:sha512 pins $4; nothing was installed"
    fi
    for _f in $_files; do
        log "downloading $1/$_f"
        fetch "$1/$_f" "$2/$_f" "$RELEASE_SETTING" "$OFFLINE_FIX" ||
            die "download failed: $1/$_f is not there (its .sha512 is)"
        (cd "$2" && sha512sum -c "$_f.sha512" >/dev/null 2>&1) ||
            die "checksum mismatch for $1/$_f (expected $(cut -d' ' -f1 "$2/$_f.sha512")); nothing was installed"
    done
    unpack_release "$2" "$3" "$1/gvisor.tar.bz2" "$_files"
}

# Unpacks (or moves) a checked release in DIR into DIR/stage and checks that
# its runsc runs here: DIR LAYOUT FROM [FILES].
unpack_release() {
    mkdir -p "$1/stage"
    if [ "$2" = archive ]; then
        tar -xjf "$1/gvisor.tar.bz2" -C "$1/stage" || die "$3 is not a bzip2 tar archive; nothing was installed"
    else
        for _f in ${4:-}; do mv "$1/$_f" "$1/stage/"; done
    fi
    [ -f "$1/stage/runsc" ] || die "$3 holds no runsc"
    chmod 0755 "$1/stage/runsc"
    [ -f "$1/stage/containerd-shim-runsc-v1" ] && chmod 0755 "$1/stage/containerd-shim-runsc-v1"
    "$1/stage/runsc" --version >/dev/null 2>&1 ||
        die "the runsc in $3 does not run on this machine ($(uname -m)); check that it was built for $(uname -m)"
}

# Nothing on the host changes until the release is known to be there: the
# checksum files are fetched into a private folder of the system's temporary
# space first, so an unreachable server or a missing release leaves no trace.
# BASE_URL RELEASE PREFIX PINNED_SHA.
cmd_install() {
    url="$1/$2/$(uname -m)" release=$2 prefix=$3 pinned_sha=$4
    probe=$(mktemp -d)
    on_exit "$probe"
    layout=$(detect_layout "$url" "$probe")
    if [ "$layout" = archive ]; then sumfile=gvisor.tar.bz2.sha512; else sumfile=runsc.sha512; fi
    published=$(cut -d' ' -f1 "$probe/$sumfile")
    begin_install "$prefix" "$probe"
    tmp=$(new_staging "$prefix")
    on_exit "$probe" "$tmp"
    cp "$probe"/*.sha512 "$tmp/"
    if already_installed "$prefix" "$url" "$published"; then
        log "release $release already installed from $url"
        fact changed false
    else
        download_release "$url" "$tmp" "$layout" "$pinned_sha"
        put_in_place "$prefix" "$tmp/stage" "$url" "$release" "$layout" "$published"
        log "installed gVisor $release ($layout layout) into $prefix"
    fi
    report_installed "$prefix" "$release" "$layout"
}

# The release archive copied to this host by the machine running Pulumi
# (gvisor-fleet:releaseFetch once), checked there against the release's
# .sha512 (or the pin) and here again against that same SHA-512.
# COPY EXPECTED_SHA RELEASE PREFIX.
cmd_install_file() {
    copy=$1 expected=$2 release=$3 prefix=$4
    source="copy:$release/$(uname -m)"
    on_exit
    # Checked where it lies first, so a bad or missing copy changes nothing on the host.
    if [ -f "$copy" ]; then
        check_copy_sha "$copy" "$expected" "$release"
    elif ! already_installed "$prefix" "$source" "$expected"; then
        copy_missing "$copy"
    fi
    begin_install "$prefix"
    if already_installed "$prefix" "$source" "$expected"; then
        log "release $release already installed from a copy with this SHA-512"
        fact changed false
    else
        [ -f "$copy" ] || copy_missing "$copy"
        tmp=$(new_staging "$prefix")
        on_exit "$tmp"
        # The staged copy is what gets unpacked: checked again, as root, where no one else writes.
        cp "$copy" "$tmp/gvisor.tar.bz2"
        check_copy_sha "$tmp/gvisor.tar.bz2" "$expected" "$release" "$copy"
        unpack_release "$tmp" archive "$copy"
        put_in_place "$prefix" "$tmp/stage" "$source" "$release" archive "$expected"
        log "installed gVisor $release (copied, SHA-512 checked) into $prefix"
    fi
    report_installed "$prefix" "$release" archive
}

copy_missing() {
    die "the copied release $1 is not on this host (removed since it was copied?); copy it again: pulumi up --replace with the URN of this machine's release-copy resource (pulumi stack --show-urns)"
}

# FILE EXPECTED_SHA RELEASE [COPY]: FILE (a staged COPY) must have EXPECTED_SHA.
check_copy_sha() {
    _found=$(sha512_of "$1")
    [ "$_found" = "$2" ] ||
        die "the copy of gVisor $3 at ${4:-$1} has SHA-512 $_found, not $2 as checked on the machine running Pulumi (gvisor-fleet:releaseFetch once): it changed on the way or on this host; nothing was installed"
}

# Takes the step lock (PATHS as for begin_step) and clears the staging
# folders of killed installs in PREFIX (tens of MB each; the lock says none
# is in use): PREFIX [PATHS].
begin_install() {
    _install_prefix=$1
    shift
    mkdir -p "$STATE_DIR" "$_install_prefix"
    begin_step "$@"
    rm -rf "$_install_prefix"/.gvisor-fleet.* "$_install_prefix/gvisor-bin.old"
    finish_killed_upgrade "$_install_prefix"
}

# Prints a new staging folder beside installDir PREFIX, so moving files into
# place is atomic.
new_staging() { mktemp -d "$1/.gvisor-fleet.XXXXXX"; }
