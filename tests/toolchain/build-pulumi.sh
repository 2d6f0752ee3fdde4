#!/bin/sh
# Builds the Pulumi engine pieces that the end-to-end tests run, from the Go
# module proxy (no GitHub, no get.pulumi.com), into a cache outside the repo:
#
#   pulumi                        the real CLI/engine (module pulumi/pkg/v3)
#   pulumi-language-python        STAND-IN Python language host (source beside this script)
#   pulumi-language-python-exec   the upstream exec shim, from the sdk/v3 module
#   pulumi-resource-command       STAND-IN "command" provider (source beside this script),
#                                 also installed into $PULUMI_HOME/plugins
#
#   sh tests/toolchain/build-pulumi.sh                  build what is missing, print the bin dir
#   sh tests/toolchain/build-pulumi.sh --print-bin-dir  print the bin dir only
#
# Then: . tests/toolchain/pulumi-env.sh   (PATH, local state, no downloads)
#
# Versions follow the pins in requirements.txt where the proxy allows:
# - CLI: the proxy serves github.com/pulumi/pulumi/pkg/v3 only at some
#   versions (v3.260.0, v3.274.0, v3.274.1, v3.275.0, ...; it answers 403 for
#   v3.272.0), so the CLI is v3.274.1, the nearest one above the pinned Python
#   SDK (pulumi==3.272.0); a newer engine runs older SDKs.
#   GVISOR_FLEET_PULUMI_VERSION (pulumi-env.sh) picks another served version.
# - Language host: the proxy refuses (403) the upstream module
#   github.com/pulumi/pulumi/sdk/python/cmd/pulumi-language-python/v3, so
#   pulumi-language-python/ here stands in for it, built against sdk/v3 at the
#   CLI's version, with the upstream pulumi-language-python-exec shim of that
#   sdk/v3. (sdk/v3 v3.272.0 is served, but not its dependency
#   github.com/pulumi/pulumi-cloud-sdk/go v1.20260918.0, so it does not build;
#   the exec shim is the same file in v3.272.0 and v3.274.1.)
# - Command provider: the proxy refuses (403) github.com/pulumi/pulumi-command/provider,
#   so pulumi-resource-command/ here stands in for it: the resource types and
#   properties of pulumi-command at the pinned version (pulumi-command==1.2.1),
#   reporting that version, so the unmodified pulumi_command package drives it.
#   It is NOT the upstream provider: what differs is listed in its main.go.
# Each binary is skipped when present (the two stand-ins are rebuilt when their
# source or versions change).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=/dev/null
. "$here/pulumi-env.sh"
version=$GVISOR_FLEET_PULUMI_VERSION
bin_dir=$GVISOR_FLEET_PULUMI_BIN

# pin NAME: the version requirements.txt pins for a Python package.
pin() {
    sed -n "s/^$1==\([0-9][0-9.]*\).*/\1/p" "$here/../../requirements.txt" | head -n 1
}
sdk_version=$(pin pulumi)
command_version=$(pin pulumi-command)
if [ -z "$sdk_version" ] || [ -z "$command_version" ]; then
    echo "build-pulumi: requirements.txt must pin pulumi==X and pulumi-command==Y" >&2
    exit 1
fi

case ${1:-} in
    --print-bin-dir)
        printf '%s\n' "$bin_dir"
        exit 0
        ;;
    "") ;;
    *)
        echo "usage: sh $0 [--print-bin-dir]" >&2
        exit 2
        ;;
esac

say() { echo "build-pulumi: $*" >&2; }

command -v go >/dev/null 2>&1 || {
    say "Go is required (go1.26 or newer)"
    exit 1
}

export CGO_ENABLED=0 GOFLAGS=-mod=mod
mkdir -p "$bin_dir"
scratch=$(mktemp -d "${TMPDIR:-/tmp}/build-pulumi.XXXXXX")
trap 'rm -rf "$scratch"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# module_field MODULE@VERSION FIELD: a field (Dir, GoMod, ...) of a module
# downloaded from the proxy into the module cache.
module_field() {
    go mod download -json "$1" |
        sed -n "s/^[[:space:]]*\"$2\": \"\\(.*\\)\",\{0,1\}\$/\\1/p"
}

# src_stamp DIR SDK VERSION: a checksum of the module in DIR plus the versions used.
src_stamp() {
    cat "$1"/*.go "$1/go.mod" "$1/go.sum" | cksum | { read -r sum size; echo "$sum-$size-sdk$2-v$3"; }
}

# note_refused MODULE: says, from the proxy's own answer, why a stand-in is built.
note_refused() {
    if answer=$(go list -m -versions "$1" 2>&1); then
        say "NOTE: the proxy now serves $1 ($answer); the stand-in could be replaced by it"
    else
        say "using a stand-in: the Go module proxy refuses $1 ($(printf '%s' "$answer" | grep -o '[0-9][0-9][0-9] [A-Za-z ]*' | head -n 1))"
    fi
}

elapsed() { echo "$(($(date +%s) - $1))s"; }

# --- pulumi CLI -------------------------------------------------------------
build_cli() {
    if [ -x "$bin_dir/pulumi" ]; then
        say "cached: $bin_dir/pulumi ($("$bin_dir/pulumi" version 2>/dev/null || echo "v$version"))"
        return
    fi
    say "building pulumi CLI v$version (takes several minutes on first run)..."
    start=$(date +%s)
    mod="$scratch/cli"
    mkdir -p "$mod"
    pkg_gomod=$(module_field "github.com/pulumi/pulumi/pkg/v3@v$version" GoMod)
    [ -n "$pkg_gomod" ] || {
        say "github.com/pulumi/pulumi/pkg/v3@v$version is not available from the Go module proxy"
        exit 1
    }
    {
        printf 'module gvisor-fleet.local/pulumi-cli\n\ngo 1.26\n\n'
        printf 'require (\n\tgithub.com/pulumi/pulumi/pkg/v3 v%s\n\tgithub.com/pulumi/pulumi/sdk/v3 v%s\n)\n\n' \
            "$version" "$version"
        # pkg/v3's own replace lines that point at other modules (not at
        # ../sdk and other local paths) must be repeated in the main module.
        awk '
            /^replace[[:space:]]*\($/ { block = 1; next }
            block && /^\)/ { block = 0; next }
            block || /^replace[[:space:]]/ {
                line = $0; sub(/^replace[[:space:]]+/, "", line); sub(/^[[:space:]]+/, "", line)
                split(line, parts, "=>"); target = parts[2]; sub(/^[[:space:]]+/, "", target)
                if (target !~ /^(\.|\/)/) print "replace " line
            }' "$pkg_gomod"
    } >"$mod/go.mod"
    printf '//go:build tools\n\npackage tools\n\nimport _ "github.com/pulumi/pulumi/pkg/v3/cmd/pulumi"\n' \
        >"$mod/tools.go"
    (cd "$mod" && go mod tidy)
    (cd "$mod" && go build -trimpath \
        -ldflags "-s -w -X github.com/pulumi/pulumi/sdk/v3/go/common/version.Version=v$version" \
        -o "$bin_dir/.pulumi.tmp" github.com/pulumi/pulumi/pkg/v3/cmd/pulumi)
    mv "$bin_dir/.pulumi.tmp" "$bin_dir/pulumi"
    say "built $bin_dir/pulumi in $(elapsed "$start")"
}

# --- stand-ins (language host, command provider) ---------------------------
# build_local NAME SDK_VERSION VERSION_STRING UPSTREAM_MODULE: builds
# $here/NAME/*.go against sdk/v3 at SDK_VERSION.
build_local() {
    name=$1 sdk=$2 reported=$3 upstream=$4
    stamp=$(src_stamp "$here/$name" "$sdk" "$reported")
    if [ -x "$bin_dir/$name" ] && [ "$(cat "$bin_dir/.$name.stamp" 2>/dev/null)" = "$stamp" ]; then
        say "cached: $bin_dir/$name (stand-in, reports $reported, sdk/v3 v$sdk)"
        return
    fi
    note_refused "$upstream"
    say "building STAND-IN $name (reports version $reported) against sdk/v3 v$sdk..."
    start=$(date +%s)
    mod="$scratch/$name"
    mkdir -p "$mod"
    # go.mod/go.sum pin every dependency (checksummed); another sdk/v3 version re-resolves them.
    cp "$here/$name"/*.go "$here/$name/go.mod" "$here/$name/go.sum" "$mod/"
    if ! grep -q "github.com/pulumi/pulumi/sdk/v3 v$sdk\$" "$mod/go.mod"; then
        (cd "$mod" && go mod edit -require="github.com/pulumi/pulumi/sdk/v3@v$sdk" && go mod tidy)
    fi
    (cd "$mod" && go build -trimpath -ldflags "-s -w -X main.version=$reported" -o "$bin_dir/.$name.tmp" .)
    mv "$bin_dir/.$name.tmp" "$bin_dir/$name"
    echo "$stamp" >"$bin_dir/.$name.stamp"
    say "built $bin_dir/$name in $(elapsed "$start")"
}

# install_exec_script SDK_VERSION: the upstream Python scripts from sdk/v3,
# installed next to the pulumi binary (where the engine finds bundled
# plugins): the language host's exec shim, and the launcher of Python dynamic
# providers (the fleet's generated SSH keys are one).
install_exec_script() {
    if [ -f "$bin_dir/pulumi-language-python-exec" ] && [ -f "$bin_dir/pulumi-resource-pulumi-python" ] &&
        [ "$(cat "$bin_dir/.pulumi-language-python-exec.sdk" 2>/dev/null)" = "$1" ]; then
        say "cached: $bin_dir/pulumi-language-python-exec, pulumi-resource-pulumi-python (sdk/v3 v$1)"
        return
    fi
    sdk_dir=$(module_field "github.com/pulumi/pulumi/sdk/v3@v$1" Dir)
    for script in "$sdk_dir/python/cmd/pulumi-language-python-exec" "$sdk_dir/python/dist/pulumi-resource-pulumi-python"; do
        [ -f "$script" ] || {
            say "$script not found"
            exit 1
        }
        name=$(basename "$script")
        cp "$script" "$bin_dir/.$name.tmp"
        chmod 755 "$bin_dir/.$name.tmp"
        mv "$bin_dir/.$name.tmp" "$bin_dir/$name"
    done
    echo "$1" >"$bin_dir/.pulumi-language-python-exec.sdk"
    say "installed $bin_dir/pulumi-language-python-exec and pulumi-resource-pulumi-python (upstream, sdk/v3 v$1)"
}

# The provider also goes into $PULUMI_HOME's plugin cache: pulumi-env.sh sets
# PULUMI_IGNORE_AMBIENT_PLUGINS, because the engine warns on every run about a
# provider that it finds on $PATH. (The language host is found next to the
# pulumi binary, with no warning.)
install_provider_plugin() {
    dest="$PULUMI_HOME/plugins/resource-command-v$command_version/pulumi-resource-command"
    if [ -f "$dest" ] && cmp -s "$dest" "$bin_dir/pulumi-resource-command"; then
        say "cached: $dest"
        return
    fi
    say "installing pulumi-resource-command into $PULUMI_HOME/plugins"
    "$bin_dir/pulumi" plugin install resource command "$command_version" --reinstall \
        --file "$bin_dir/pulumi-resource-command" >&2
}

say "into $bin_dir: pulumi CLI v$version (Python SDK pinned: $sdk_version)," \
    "stand-in language host and command provider $command_version (both on sdk/v3 v$version)"
build_cli
install_exec_script "$version"
build_local pulumi-language-python "$version" "$version" \
    github.com/pulumi/pulumi/sdk/python/cmd/pulumi-language-python/v3
build_local pulumi-resource-command "$version" "$command_version" github.com/pulumi/pulumi-command/provider
install_provider_plugin
printf '%s\n' "$bin_dir"
