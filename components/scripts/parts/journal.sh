# shellcheck shell=sh
# The journal: under BACKUP_DIR, the first copy of every file this program
# changes (or the fact that it was absent) and the hashes of what it wrote,
# so destroy can put back exactly what was there. Beside FILE's copy, marks
# named FILE.<mark> note what a killed step must still finish. Files journaled
# first by this run are listed in SCRATCH/journaled (see forget_unchanged).

sha512_of() { sha512sum "$1" | cut -d' ' -f1; }

has_backup() { [ -e "$BACKUP_DIR$1" ] || [ -L "$BACKUP_DIR$1" ] || [ -e "$BACKUP_DIR$1.absent" ]; }

# Keeps the first copy of a file (or folder) we are about to change, or the
# fact that it was absent. A later run never overwrites it. Config files we
# write through a symlink, so their contents are kept; with "verbatim"
# (installDir) a link is kept as one: FILE [verbatim].
backup_once() {
    _backup_saved="$BACKUP_DIR$1"
    has_backup "$1" && return 0
    mkdir -p "$(dirname "$_backup_saved")"
    if [ -e "$1" ] || [ -L "$1" ]; then
        rm -rf "$_backup_saved.partial"
        if [ "${2:-}" = verbatim ]; then cp -a "$1" "$_backup_saved.partial"; else cp -pL "$1" "$_backup_saved.partial"; fi
        mv "$_backup_saved.partial" "$_backup_saved"
    else
        : > "$_backup_saved.absent"
    fi
}

# Journal first: before FILE is replaced by NEW, its first copy and the hash
# of NEW are on disk. Whatever point a step is killed at, destroy can then
# tell "ours or the original" (restore byte for byte) from "edited since".
journal_intent() {
    if ! has_backup "$1"; then
        mkdir -p "$SCRATCH"
        printf '%s\n' "$1" >> "$SCRATCH/journaled"
    fi
    backup_once "$1"
    _journal_hash=$(sha512_of "$2")
    grep -qx "$_journal_hash" "$BACKUP_DIR$1.written" 2>/dev/null ||
        echo "$_journal_hash" >> "$BACKUP_DIR$1.written"
}

# A step that failed and changed nothing leaves no journal behind: the files
# it journaled first are forgotten where they are as they were.
forget_unchanged() {
    [ -f "$SCRATCH/journaled" ] || return 0
    while IFS= read -r _journaled; do
        if same_as_backup "$_journaled"; then forget "$_journaled"; fi
    done < "$SCRATCH/journaled"
}

# True when FILE holds what was there before install or something this program wrote.
ours_or_original() {
    [ -e "$1" ] || return 0
    _ours_hash=$(sha512_of "$1")
    # (the .written file under STATE_DIR is where earlier versions kept one hash)
    grep -qx "$_ours_hash" "$BACKUP_DIR$1.written" "$STATE_DIR/${1##*/}.written" 2>/dev/null && return 0
    [ -f "$BACKUP_DIR$1" ] && [ "$_ours_hash" = "$(sha512_of "$BACKUP_DIR$1")" ]
}

# True when FILE is as it was before this program first touched it.
same_as_backup() {
    if [ -e "$BACKUP_DIR$1.absent" ]; then
        [ ! -e "$1" ]
    else
        [ -f "$1" ] && cmp -s "$1" "$BACKUP_DIR$1"
    fi
}

# Puts back the first copy taken by backup_once (the journal stays until forget).
put_back() {
    _put_saved="$BACKUP_DIR$1"
    if is_folder "$_put_saved" && is_folder "$1"; then
        put_back_in_place "$_put_saved" "$1"
    elif [ -d "$_put_saved" ] || [ -L "$_put_saved" ]; then
        rm -rf "$1"
        cp -a "$_put_saved" "$1"
    elif [ -e "$_put_saved" ]; then
        replace_file "$_put_saved" "$1"
    elif [ -e "$_put_saved.absent" ]; then
        rm -rf "$1"
    fi
}

is_folder() { [ -d "$1" ] && [ ! -L "$1" ]; }

# SAVED FOLDER: FOLDER made as SAVED, keeping every folder both have in place,
# so a daemon watching one (containerd's CRI exits when /etc/cni/net.d goes)
# sees files come and go, never its folder. Everything else goes, then
# SAVED's tree is copied over.
put_back_in_place() {
    (cd "$2" && find . -depth ! -name .) | while IFS= read -r _in_place; do
        is_folder "$2/$_in_place" && is_folder "$1/$_in_place" && continue
        rm -rf "${2:?}/$_in_place"
    done
    cp -a "$1/." "$2/"
}

forget() {
    rm -rf "$BACKUP_DIR$1" "$BACKUP_DIR$1.partial"
    rm -f "$BACKUP_DIR$1.absent" "$BACKUP_DIR$1.written" "$BACKUP_DIR$1.restart" "$BACKUP_DIR$1.pending" \
        "$BACKUP_DIR$1.engine-before" "$STATE_DIR/${1##*/}.written"
}

restore_backup() { put_back "$1" && forget "$1"; }

# Marks beside FILE's first copy: set_mark FILE MARK, has_mark, clear_mark.
set_mark() {
    mkdir -p "$(dirname "$BACKUP_DIR$1")"
    : > "$BACKUP_DIR$1.$2"
}
has_mark() { [ -e "$BACKUP_DIR$1.$2" ]; }
clear_mark() { rm -f "$BACKUP_DIR$1.$2"; }
