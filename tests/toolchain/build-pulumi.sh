#!/bin/sh
# Builds the Pulumi engine and the upstream plugins that the tests run, into a
# cache outside the repo, and installs the plugins where the offline engine
# finds them:
#
#   pulumi                          the CLI/engine (module pulumi/pkg/v3, Go module proxy)
#   pulumi-language-python          upstream Python language host, next to the CLI
#   pulumi-language-python-exec     its exec shim and the dynamic-provider launcher
#   pulumi-resource-pulumi-python   (both from the sdk/v3 module), next to the CLI
#   pulumi-resource-command         upstream pulumi-command provider  } into
#   pulumi-resource-kubernetes      upstream pulumi-kubernetes provider } $PULUMI_HOME/plugins
#
#   sh tests/toolchain/build-pulumi.sh                  build what is missing, print the bin dir
#   sh tests/toolchain/build-pulumi.sh --print-bin-dir  print the bin dir only
#   sh tests/toolchain/build-pulumi.sh --print-upstream-dir  where the upstream sources are (or nothing)
#
# Then: . tests/toolchain/pulumi-env.sh   (PATH, local state, no downloads)
#
# Two paths:
# - upstream sources present (../shared/upstream beside the checkout, or
#   $GVISOR_FLEET_UPSTREAM): the Go module proxy refuses the language host's
#   and pulumi-command's modules and serves pulumi-kubernetes only at a
#   pseudo-version, so the plugins are built from those unchanged upstream
#   tarballs. Each tarball is checked against its SHA256SUMS before it is
#   unpacked. A build is cached under $cache/pulumi-plugins/NAME/KEY, KEY being
#   a hash of the inputs' checksums, the recipe's text and the Go version, so
#   it runs again only when one of those changes.
# - no upstream sources (a machine with internet), or GVISOR_FLEET_UPSTREAM=none:
#   the official plugins at the same versions. The providers come through
#   `pulumi plugin install` (from GVISOR_FLEET_PLUGIN_SERVER when set). The
#   language host, which that command refuses (the official CLI bundles it),
#   comes from the official CLI archive of the engine's version, checked
#   against that release's checksums file (GVISOR_FLEET_PULUMI_RELEASES: the
#   base URL, GitHub's release downloads unless set).
#
# Versions: the CLI is v3.274.1 (GVISOR_FLEET_PULUMI_VERSION, pulumi-env.sh),
# the nearest version above the pinned Python SDK (pulumi==3.272.0) that the
# proxy serves; a newer engine runs older SDKs. The language host is built
# against the CLI's sdk/pkg and reports the CLI's version. The providers are at
# the versions requirements.txt pins (pulumi-command, pulumi-kubernetes), the
# ones the Python packages ask the engine for.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source=/dev/null
. "$here/pulumi-env.sh"
version=$GVISOR_FLEET_PULUMI_VERSION
bin_dir=$GVISOR_FLEET_PULUMI_BIN
cache=${GVISOR_FLEET_CACHE:-$HOME/.cache/gvisor-fleet}

# pin NAME: the version requirements.txt pins for a Python package.
pin() {
    sed -n "s/^$1==\([0-9][0-9.]*\).*/\1/p" "$repo/requirements.txt" | head -n 1
}
sdk_version=$(pin pulumi)
command_version=$(pin pulumi-command)
kubernetes_version=$(pin pulumi-kubernetes)
if [ -z "$sdk_version" ] || [ -z "$command_version" ] || [ -z "$kubernetes_version" ]; then
    echo "build-pulumi: requirements.txt must pin pulumi==X, pulumi-command==Y and pulumi-kubernetes==Z" >&2
    exit 1
fi


say() { echo "build-pulumi: $*" >&2; }
elapsed() { echo "$(($(date +%s) - $1))s"; }

# upstream_dir: where the upstream plugin sources are, or nothing. A checkout
# has them beside it (../shared/upstream); a git worktree elsewhere finds them
# beside its main checkout.
upstream_dir() {
    [ "${GVISOR_FLEET_UPSTREAM:-}" != none ] || return 0
    if [ -n "${GVISOR_FLEET_UPSTREAM:-}" ]; then
        [ -f "$GVISOR_FLEET_UPSTREAM/SHA256SUMS" ] || {
            say "GVISOR_FLEET_UPSTREAM=$GVISOR_FLEET_UPSTREAM has no SHA256SUMS"
            exit 1
        }
        printf '%s\n' "$GVISOR_FLEET_UPSTREAM"
        return
    fi
    for base in "$repo" "$(git -C "$repo" rev-parse --path-format=absolute --git-common-dir 2>/dev/null | sed 's|/\.git$||')"; do
        if [ -n "$base" ] && [ -f "$base/../shared/upstream/SHA256SUMS" ]; then
            (cd "$base/../shared/upstream" && pwd)
            return
        fi
    done
}

case ${1:-} in
    --print-bin-dir)
        printf '%s\n' "$bin_dir"
        exit 0
        ;;
    --print-upstream-dir)
        upstream_dir
        exit 0
        ;;
    "") ;;
    *)
        echo "usage: sh $0 [--print-bin-dir | --print-upstream-dir]" >&2
        exit 2
        ;;
esac

command -v go >/dev/null 2>&1 || {
    say "Go is required (go1.26 or newer)"
    exit 1
}

export CGO_ENABLED=0 GOFLAGS=-mod=mod
mkdir -p "$bin_dir"
scratch=$(mktemp -d "${TMPDIR:-/tmp}/build-pulumi.XXXXXX")
trap 'chmod -R u+w "$scratch" 2>/dev/null; rm -rf "$scratch"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# module_field MODULE@VERSION FIELD: a field (Dir, GoMod, ...) of a module
# downloaded from the proxy into the module cache.
module_field() {
    go mod download -json "$1" |
        sed -n "s/^[[:space:]]*\"$2\": \"\\(.*\\)\",\{0,1\}\$/\\1/p"
}

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

# --- upstream plugins from ../shared/upstream --------------------------------

# unpack FILE DEST: FILE from the upstream directory, checked against
# SHA256SUMS first, unpacked into the directory DEST (a .tar.gz) or
# decompressed to the file DEST (a .gz).
unpack() {
    expected=$(awk -v f="$1" '$2 == f || $2 == "*" f { print $1 }' "$upstream/SHA256SUMS")
    [ -n "$expected" ] || {
        say "$upstream/SHA256SUMS has no line for $1"
        exit 1
    }
    actual=$(sha256sum "$upstream/$1" | cut -d' ' -f1)
    [ "$actual" = "$expected" ] || {
        say "$upstream/$1: SHA-256 $actual, SHA256SUMS says $expected; not using it"
        exit 1
    }
    case $1 in
        *.tar.gz) mkdir -p "$2" && tar -xzf "$upstream/$1" -C "$2" ;;
        *.gz) gunzip -c "$upstream/$1" >"$2" ;;
        *)
            say "do not know how to unpack $1"
            exit 1
            ;;
    esac
}

# The recipes. Each runs in an empty directory with the output path as $1;
# its own text is part of its cache key.
recipe_language_python() {
    unpack "pulumi-v3.259.0-language-python.tar.gz" .
    cd sdk/python/cmd/pulumi-language-python
    # Its replace lines point at the sdk and pkg of the pulumi tree: use the
    # CLI's published versions instead.
    go mod edit -dropreplace github.com/pulumi/pulumi/sdk/v3 -dropreplace github.com/pulumi/pulumi/pkg/v3
    go get "github.com/pulumi/pulumi/pkg/v3@v$version" "github.com/pulumi/pulumi/sdk/v3@v$version"
    go build -trimpath -ldflags "-s -w -X github.com/pulumi/pulumi/sdk/v3/go/common/version.Version=v$version" \
        -o "$1" .
}

recipe_command() {
    unpack "pulumi-command-v$command_version-provider.tar.gz" .
    cd provider
    go build -trimpath \
        -ldflags "-s -w -X github.com/pulumi/pulumi-command/provider/pkg/version.Version=$command_version" \
        -o "$1" ./cmd/pulumi-resource-command
}

recipe_kubernetes() {
    unpack "pulumi-kubernetes-v$kubernetes_version-provider.tar.gz" .
    unpack "pulumi-v3.243.0-pkg.tar.gz" .
    unpack "pulumi-kubernetes-v$kubernetes_version-schema.json.gz" provider/cmd/pulumi-resource-kubernetes/schema.json
    cd provider
    # The proxy refuses the .mod of the pinned fluxcd/pkg/ssa pseudo-version
    # (v0.72.0 has the same Kubernetes dependencies); pkg/v3 from v3.247.0 on
    # does not compile with this provider and the proxy refuses v3.243.0's zip;
    # the sdk/v4 replace points at a directory outside provider/.
    go mod edit \
        -replace github.com/fluxcd/pkg/ssa=github.com/fluxcd/pkg/ssa@v0.72.0 \
        -replace "github.com/pulumi/pulumi/pkg/v3=$(cd ../pkg && pwd)" \
        -dropreplace github.com/pulumi/pulumi-kubernetes/sdk/v4 \
        -require "github.com/pulumi/pulumi-kubernetes/sdk/v4@v$kubernetes_version"
    VERSION=$kubernetes_version go generate ./cmd/pulumi-resource-kubernetes
    go build -trimpath \
        -ldflags "-s -w -X github.com/pulumi/pulumi-kubernetes/provider/v4/pkg/version.Version=$kubernetes_version" \
        -o "$1" ./cmd/pulumi-resource-kubernetes
}

# build_upstream NAME RECIPE INPUTS...: the binary NAME built by RECIPE from
# the upstream INPUTS (file names in SHA256SUMS), from the cache when nothing
# changed; prints its path.
build_upstream() {
    name=$1 recipe=$2
    shift 2
    key=$({
        for input in "$@"; do grep -F "  $input" "$upstream/SHA256SUMS" || echo "missing $input"; done
        awk -v f="$recipe() {" '$0 == f { on = 1 } on { print } on && /^}$/ { exit }' "$here/build-pulumi.sh"
        go env GOVERSION
        echo "cli=$version command=$command_version kubernetes=$kubernetes_version"
    } | sha256sum | cut -c1-16)
    out="$cache/pulumi-plugins/$name/$key"
    if [ -x "$out/$name" ]; then
        say "cached: $out/$name (upstream)"
        printf '%s\n' "$out/$name"
        return
    fi
    say "building upstream $name from $upstream (inputs: $*)..."
    start=$(date +%s)
    work="$scratch/$name"
    mkdir -p "$work" "$out"
    (cd "$work" && "$recipe" "$out/.$name.tmp") >&2
    mv "$out/.$name.tmp" "$out/$name"
    say "built $out/$name in $(elapsed "$start")"
    printf '%s\n' "$out/$name"
}

# install_binary SRC DEST: copies SRC to DEST unless it is already there.
install_binary() {
    if cmp -s "$1" "$2"; then
        return
    fi
    cp "$1" "$2.tmp"
    chmod 755 "$2.tmp"
    mv "$2.tmp" "$2"
    say "installed $2"
}

# install_provider NAME VERSION BINARY: into $PULUMI_HOME's plugin cache.
# pulumi-env.sh sets PULUMI_IGNORE_AMBIENT_PLUGINS, because the engine warns
# on every run about a provider that it finds on $PATH. (The language host is
# found next to the pulumi binary, with no warning.)
install_provider() {
    dest="$PULUMI_HOME/plugins/resource-$1-v$2/pulumi-resource-$1"
    if [ -f "$dest" ] && cmp -s "$dest" "$3"; then
        say "cached: $dest"
        return
    fi
    say "installing pulumi-resource-$1 v$2 into $PULUMI_HOME/plugins"
    "$bin_dir/pulumi" plugin install resource "$1" "$2" --reinstall --file "$3" >&2
}

# --- the official plugins (no upstream sources here) ------------------------
releases=${GVISOR_FLEET_PULUMI_RELEASES:-https://github.com/pulumi/pulumi/releases/download}
official_marker="$bin_dir/.pulumi-language-python.official"

# install_official_language_host: pulumi-language-python from the official
# CLI archive of v$version, next to the CLI built here.
install_official_language_host() {
    if [ -x "$bin_dir/pulumi-language-python" ] && [ "$(cat "$official_marker" 2>/dev/null)" = "$version" ]; then
        say "cached: official language host v$version in $bin_dir"
        return
    fi
    case $(uname -m) in
        x86_64) archive="pulumi-v$version-linux-x64.tar.gz" ;;
        aarch64) archive="pulumi-v$version-linux-arm64.tar.gz" ;;
        *)
            say "no official Pulumi archive for $(uname -m)"
            exit 1
            ;;
    esac
    sums="pulumi-$version-checksums.txt"
    say "downloading $releases/v$version/$archive and $sums"
    curl -fsSL --retry 3 -o "$scratch/$archive" "$releases/v$version/$archive"
    curl -fsSL --retry 3 -o "$scratch/$sums" "$releases/v$version/$sums"
    expected=$(awk -v f="$archive" '$2 == f || $2 == "*" f { print $1 }' "$scratch/$sums")
    actual=$(sha256sum "$scratch/$archive" | cut -d' ' -f1)
    if [ -z "$expected" ] || [ "$actual" != "$expected" ]; then
        say "$archive: SHA-256 $actual, $sums says ${expected:-nothing}; not using it"
        exit 1
    fi
    tar -xzf "$scratch/$archive" -C "$scratch" pulumi/pulumi-language-python
    rm -f "$official_marker"
    install_binary "$scratch/pulumi/pulumi-language-python" "$bin_dir/pulumi-language-python"
    echo "$version" >"$official_marker"
}

install_official() {
    install_official_language_host
    for plugin in "command $command_version" "kubernetes $kubernetes_version"; do
        # shellcheck disable=SC2086 # two words: name, version
        set -- $plugin
        if [ -d "$PULUMI_HOME/plugins/resource-$1-v$2" ] && ! [ -e "$PULUMI_HOME/plugins/resource-$1-v$2.partial" ]; then
            say "cached: official resource plugin $1 v$2"
            continue
        fi
        say "pulumi plugin install resource $1 $2${GVISOR_FLEET_PLUGIN_SERVER:+ --server $GVISOR_FLEET_PLUGIN_SERVER}"
        "$bin_dir/pulumi" plugin install resource "$1" "$2" \
            ${GVISOR_FLEET_PLUGIN_SERVER:+--server "$GVISOR_FLEET_PLUGIN_SERVER"} >&2
    done
}

upstream=$(upstream_dir)
build_cli
install_exec_script "$version"
if [ -n "$upstream" ]; then
    say "path: upstream plugin sources in $upstream (language host v$version," \
        "command v$command_version, kubernetes v$kubernetes_version)"
    # Each is installed as soon as it is built. (Assigned first: a failed
    # build must stop the script.)
    language_host=$(build_upstream pulumi-language-python recipe_language_python \
        "pulumi-v3.259.0-language-python.tar.gz")
    rm -f "$official_marker"
    install_binary "$language_host" "$bin_dir/pulumi-language-python"
    command_provider=$(build_upstream pulumi-resource-command recipe_command \
        "pulumi-command-v$command_version-provider.tar.gz")
    install_provider command "$command_version" "$command_provider"
    kubernetes_provider=$(build_upstream pulumi-resource-kubernetes recipe_kubernetes \
        "pulumi-kubernetes-v$kubernetes_version-provider.tar.gz" "pulumi-v3.243.0-pkg.tar.gz" \
        "pulumi-kubernetes-v$kubernetes_version-schema.json.gz")
    install_provider kubernetes "$kubernetes_version" "$kubernetes_provider"
else
    say "path: no upstream plugin sources (../shared/upstream beside $repo, or GVISOR_FLEET_UPSTREAM):" \
        "installing the official plugins"
    install_official
fi
printf '%s\n' "$bin_dir"
