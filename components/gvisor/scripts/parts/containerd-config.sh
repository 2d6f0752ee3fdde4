# shellcheck shell=sh
# containerd's config file: its version, its plan, and what containerd says of it.

# Prints "<config version> <CRI runtime plugin id>" for a containerd major
# version and the `version = N` of an existing config (or "none").
# containerd 2.x reads v2 files through migration; writing a v3 table into a v2
# file (or the reverse) is silently ignored (gvisor#13985).
containerd_plan() {
    major=$1 file_version=$2
    case $file_version in
        none) if [ "$major" -ge 2 ]; then file_version=3; else file_version=2; fi ;;
    esac
    case $file_version in
        2) echo "2 io.containerd.grpc.v1.cri" ;;
        3 | 4)
            [ "$major" -ge 2 ] || die "$CONTAINERD_CONFIG says version = $file_version, which containerd $major.x cannot read"
            echo "$file_version io.containerd.cri.v1.runtime"
            ;;
        1)
            # `config migrate` exists since containerd 2.0 only.
            if [ "$major" -ge 2 ]; then
                die "$CONTAINERD_CONFIG is a version 1 config; migrate it first: containerd config migrate > new.toml, review it, then move it into place"
            fi
            die "$CONTAINERD_CONFIG is a version 1 config; migrate it to version 2 first (containerd $major.x has no 'config migrate': start from 'containerd config default', which prints a version 2 file, and carry your settings over)"
            ;;
        *) die "$CONTAINERD_CONFIG has an unknown 'version = $file_version'" ;;
    esac
}

config_file_version() {
    if [ -f "$1" ]; then
        # Top-level only (a table's own `version` key is not the file's), indented or not.
        v=$(sed -n '/^[[:space:]]*\[/q; s/^[[:space:]]*version[[:space:]]*=[[:space:]]*\([0-9][0-9]*\).*/\1/p' "$1" | head -n 1)
        echo "${v:-1}"
    else
        echo none
    fi
}

# `containerd config dump` of a candidate config. containerd resolves relative
# imports against the config's own folder, so the candidate sits beside the
# real file while it is checked, and messages name the real file.
dump_candidate() {
    cand=$1
    if [ -d "$(dirname "$CONTAINERD_CONFIG")" ]; then
        cand="$CONTAINERD_CONFIG.gvisor-fleet.new"
        cp "$1" "$cand"
    fi
    _dump_rc=0
    containerd --config "$cand" config dump > "$2" 2>"$3" || _dump_rc=$?
    [ "$cand" = "$1" ] || rm -f "$cand"
    sed -i "s|$cand|$CONTAINERD_CONFIG|g; s|$1|$CONTAINERD_CONFIG|g" "$3"
    return "$_dump_rc"
}

# The engine's own reason from its error output: the line that says what is
# wrong (a TOML error, a failed load), not the stack frames after it.
first_reason() {
    grep -m 1 -iE 'toml|failed|invalid|error|cannot|no such|denied|space' "$1" || head -n 1 "$1"
}

# Why containerd cannot read candidate CONFIG (its error output in ERR), as
# one sentence. A value of the wrong type comes out of containerd as a Go
# panic or a decode error that may lack the key or the line: name both here.
config_reason() {
    if ! grep -qE "Can.t convert|cannot decode TOML|interface conversion" "$2"; then
        first_reason "$2"
        return 0
    fi
    _row=$(sed -nE 's/.*\(([0-9]+), [0-9]+\): Can.t convert.*/\1/p; s/.*at row ([0-9]+) column.*/\1/p' "$2" | head -n 1)
    _found=$(sed -nE 's/.*interface \{\} is ([^,]*), not .*/\1/p; s/.*decode TOML ([a-z]+) into.*/\1/p; s/.*Can.t convert [^(]*\(([a-z0-9]+)\).*/\1/p' "$2" | head -n 1)
    _wanted=$(sed -nE 's/.*interface \{\} is [^,]*, not (.*)/\1/p; s/.*decode TOML [a-z]+ into .* of type ([][a-z0-9.]+).*/\1/p; s/.*decode TOML [a-z]+ into ([^ ]+)$/\1/p; s/.*Can.t convert .* to ([^ (]+).*/\1/p' "$2" | head -n 1)
    _keys=$(wrong_type_keys "$1" "$_row" "$_found")
    printf 'a value has the wrong type (%s where containerd expects %s)%s; fix the value' \
        "$(type_name "$_found")" "$(type_name "$_wanted")" "${_keys:+: $_keys}"
}

type_name() {
    case $1 in
        int*) echo "a number" ;;
        float*) echo "a decimal number" ;;
        bool*) echo "true or false" ;;
        string) echo "a string" ;;
        '[]'* | slice | array) echo "a list" ;;
        map* | table | config.*) echo "a table" ;;
        *) echo "a value of another type" ;;
    esac
}

# The keys of CONFIG that may hold the wrong value, with their tables and
# lines: the key on ROW when containerd named one, else every key under a
# plugin table whose value is of the FOUND kind.
wrong_type_keys() {
    awk -v row="$2" -v found="$3" '
        /^[[:space:]]*\[/ { table = $0; gsub(/^[[:space:]]+|[[:space:]]+$/, "", table); next }
        /^[[:space:]]*[A-Za-z0-9_."'"'"'-]+[[:space:]]*=/ {
            key = $0; sub(/[[:space:]]*=.*/, "", key); gsub(/^[[:space:]]+/, "", key)
            value = $0; sub(/^[^=]*=[[:space:]]*/, "", value)
            if (row != "") { if (NR != row) next }
            else {
                if (table !~ /^\[plugins/) next
                if (found ~ /^int|^integer$/ && value !~ /^[-+]?[0-9]/) next
                if (found ~ /^bool/ && value !~ /^(true|false)/) next
                if (found == "string" && value !~ /^["'"'"']/) next
                if (found ~ /^\[\]|^slice$|^array$/ && value !~ /^\[/) next
                if (found == "") next
            }
            out = out (out == "" ? "" : ", ") (table == "" ? "" : table " ") key " (line " NR ")"
        }
        END { printf "%s", out }
    ' "$1"
}

# Docker CE's containerd package ships a version 1 config whose only setting
# is disabled_plugins = ["cri"], so Kubernetes cannot use containerd at all.
# That file (comments aside) becomes version 2 with CRI enabled; any other
# version 1 file needs a real migration, which only its owner can review.
# An empty file counts as that file too.
upgrade_docker_default_config() {
    enable_cri "$1" > "$1.one-line"
    if grep -v '^[[:space:]]*#' "$1.one-line" | grep -v '^[[:space:]]*$' | grep -qv '^[[:space:]]*disabled_plugins'; then
        return 1
    fi
    echo "version = 2"
    sed '/^[[:space:]]*disabled_plugins/d' "$1.one-line"
}

# Prints the file with CRI dropped from disabled_plugins, however the list is
# written (one line or several, double or single quotes); a list without CRI
# stays as it was. Version 2+ files name plugins by full id.
enable_cri() {
    awk '
        !inlist && /^[[:space:]]*disabled_plugins[[:space:]]*=/ { inlist = 1; text = "" }
        inlist {
            text = text $0 "\n"
            if (index($0, "]") == 0) next
            inlist = 0
            if (text !~ /cri/) { printf "%s", text; next }
            body = text
            sub(/^[^[]*\[/, "", body)
            sub(/\][^]]*$/, "", body)
            n = split(body, items, ",")
            kept = ""
            for (i = 1; i <= n; i++) {
                item = items[i]
                gsub(/^[[:space:]]+|[[:space:]]+$/, "", item)
                if (item == "" || item ~ /cri/) continue
                kept = kept (kept == "" ? "" : ", ") item
            }
            printf "disabled_plugins = [%s]\n", kept
            next
        }
        { print }
    ' "$1"
}

default_runtime() {
    sed -n "s/^ *default_runtime_name = [\"']\\([^\"']*\\)[\"'].*/\\1/p" "$1" | head -n 1
}

# The files CONFIG imports (its top-level `imports = [...]`, on one line or
# several; relative ones against $CONTAINERD_CONFIG's folder, globs expanded).
imported_files() {
    awk '
        /^[[:space:]]*\[/ { exit }
        !inlist && /^[[:space:]]*imports[[:space:]]*=/ { inlist = 1 }
        inlist {
            line = $0
            while (match(line, /"[^"]*"|\047[^\047]*\047/)) {
                print substr(line, RSTART + 1, RLENGTH - 2)
                line = substr(line, RSTART + RLENGTH)
            }
            if (index($0, "]")) exit
        }
    ' "$1" | while IFS= read -r _pattern; do
        case $_pattern in /*) ;; *) _pattern="$(dirname "$CONTAINERD_CONFIG")/$_pattern" ;; esac
        # shellcheck disable=SC2086 # the pattern is a glob, expanded here
        for _imported in $_pattern; do [ ! -f "$_imported" ] || echo "$_imported"; done
    done
}

# The files CONFIG imports that define a table of the CRI plugin, comma-separated.
cri_drop_ins() {
    imported_files "$1" | while IFS= read -r _imported; do
        if grep -Eq "^[[:space:]]*\[plugins\.[\"']io\.containerd\.(grpc\.v1\.cri|cri\.v1\.runtime)[\"']" "$_imported"; then
            echo "$_imported"
        fi
    done | paste -sd, - | sed 's/,/, /g'
}
