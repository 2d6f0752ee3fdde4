#!/bin/sh
# Builds the Pulumi engine pieces that the integration tests run, from the Go
# module proxy (no GitHub, no get.pulumi.com), into a cache outside the repo:
#
#   pulumi                        the real CLI/engine (module pulumi/pkg/v3)
#   pulumi-language-python        Python language host (source beside this script)
#   pulumi-language-python-exec   the upstream exec shim, from the sdk/v3 module
#   pulumi-resource-command       stand-in "command" provider (source beside this script),
#                                 also installed into $PULUMI_HOME/plugins
#
#   sh tests/toolchain/build-pulumi.sh                  build what is missing, print the bin dir
#   sh tests/toolchain/build-pulumi.sh --print-bin-dir  print the bin dir only
#
# Then: . tests/toolchain/pulumi-env.sh   (PATH, local state, no downloads)
#
# Versions. The proxy serves github.com/pulumi/pulumi/pkg/v3 only at some
# versions (v3.274.0, v3.274.1, v3.275.0, v3.276.0; not v3.272.0), so the CLI
# is v3.274.1, the nearest one above the pinned Python SDK (pulumi==3.272.0);
# a newer engine runs older SDKs. GVISOR_FLEET_PULUMI_VERSION (pulumi-env.sh)
# picks another served version. The proxy does not serve the upstream
# language host (github.com/pulumi/pulumi/sdk/python/cmd/pulumi-language-python/v3)
# nor the command provider (github.com/pulumi/pulumi-command/provider), so the
# two small Go programs under pulumi-language-python/ and
# pulumi-resource-command/ stand in for them; both build against sdk/v3 at
# the CLI's version. Each binary is skipped when present (the two local ones
# are rebuilt when their source changes).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=/dev/null
. "$here/pulumi-env.sh"
version=$GVISOR_FLEET_PULUMI_VERSION
bin_dir=$GVISOR_FLEET_PULUMI_BIN
command_version=1.2.1 # the pulumi-command release whose Python SDK the project pins

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

# src_stamp DIR: a checksum of the Go sources in DIR plus the versions used.
src_stamp() {
    cat "$1"/*.go | cksum | { read -r sum size; echo "$sum-$size-v$version-$command_version"; }
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

# --- local Go programs (language host, command provider) -------------------
# build_local NAME VERSION_STRING: builds $here/NAME/*.go against sdk/v3.
build_local() {
    name=$1
    stamp=$(src_stamp "$here/$name")
    if [ -x "$bin_dir/$name" ] && [ "$(cat "$bin_dir/.$name.stamp" 2>/dev/null)" = "$stamp" ]; then
        say "cached: $bin_dir/$name"
        return
    fi
    say "building $name $2 against sdk/v3 v$version..."
    start=$(date +%s)
    mod="$scratch/$name"
    mkdir -p "$mod"
    cp "$here/$name"/*.go "$mod/"
    printf 'module gvisor-fleet.local/%s\n\ngo 1.26\n\nrequire github.com/pulumi/pulumi/sdk/v3 v%s\n' \
        "$name" "$version" >"$mod/go.mod"
    (cd "$mod" && go mod tidy)
    (cd "$mod" && go build -trimpath -ldflags "-s -w -X main.version=$2" -o "$bin_dir/.$name.tmp" .)
    mv "$bin_dir/.$name.tmp" "$bin_dir/$name"
    echo "$stamp" >"$bin_dir/.$name.stamp"
    say "built $bin_dir/$name in $(elapsed "$start")"
}

install_exec_script() {
    if [ -f "$bin_dir/pulumi-language-python-exec" ]; then
        say "cached: $bin_dir/pulumi-language-python-exec"
        return
    fi
    sdk_dir=$(module_field "github.com/pulumi/pulumi/sdk/v3@v$version" Dir)
    script="$sdk_dir/python/cmd/pulumi-language-python-exec"
    [ -f "$script" ] || {
        say "pulumi-language-python-exec not found in $sdk_dir"
        exit 1
    }
    cp "$script" "$bin_dir/.pulumi-language-python-exec.tmp"
    chmod 755 "$bin_dir/.pulumi-language-python-exec.tmp"
    mv "$bin_dir/.pulumi-language-python-exec.tmp" "$bin_dir/pulumi-language-python-exec"
    say "installed $bin_dir/pulumi-language-python-exec (sdk/v3 v$version)"
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

build_cli
install_exec_script
build_local pulumi-language-python "$version"
build_local pulumi-resource-command "$command_version"
install_provider_plugin
printf '%s\n' "$bin_dir"
