#!/bin/sh
# The test command: set-up (skipped when done), then every tier, fastest first.
#
#   sh tests/run.sh                 everything CI runs
#   sh tests/run.sh unit host       only these tiers (set-up still runs)
#   SKIP_SETUP=1 sh tests/run.sh    skip tests/setup.sh
#
# A skipped test fails its tier unless tests/conftest.py allows that skip in
# the context GVISOR_FLEET_TEST_CONTEXT names (unset: the full CI machine, where
# nothing may skip). Each tier's summary line counts passed, failed, skipped.
#
# Tiers: lint (ruff, formatting, mypy, shellcheck, actionlint, gofmt), unit (Pulumi mocks, pure
# functions, manifests against the Kubernetes schema), host (the host agent
# against real runsc, dockerd, containerd in sandboxes), e2e (the real Pulumi
# engine: preview, up, no-op, destroy), vm (x86_64 and aarch64 QEMU VMs, and a
# kubeadm cluster on them through the engine),
# cluster (a real one-node Kubernetes with pods under runsc, and the kube layer).
set -eu
cd "$(dirname "$0")/.."

# e2e before vm: the vm tier waits for the Kubernetes builds, which go on meanwhile.
tiers=${*:-lint unit host e2e vm cluster}

# The Kubernetes builds and the local Kubernetes directory made from them
# (both node arches, a third of a first run's set-up) need only the vm and
# cluster tiers, so they run at the lowest priority beside the tiers before
# them, which leave much of the CPU idle; the first of those tiers waits for
# them. Cached, they take seconds.
# shellcheck source=tests/toolchain/background.sh
. tests/toolchain/background.sh
if [ -n "${SKIP_SETUP:-}" ]; then
    :
elif [ "${tiers%% *}" = cluster ]; then
    sh tests/setup.sh
else
    sh tests/setup.sh --no-kubernetes
    case " $tiers " in
        *" vm "* | *" cluster "*)
            background_start kubernetes nice -n 19 sh tests/toolchain/make-kubernetes-dir.sh
            ;;
    esac
fi
export PATH="$PWD/.venv/bin:$PATH:/usr/local/go/bin"

# Each pytest session writes its counts here (tests/conftest.py), and fails on
# a skip that tests/conftest.py does not allow where it runs.
GVISOR_FLEET_TEST_COUNTS=$(mktemp)
export GVISOR_FLEET_TEST_COUNTS
trap 'rm -f "$GVISOR_FLEET_TEST_COUNTS"; background_stop' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

banner() { printf '\n==================== %s ====================\n' "$*"; }
failed=""
summary=""
run_tier() {
    tier=$1
    shift
    banner "$tier"
    start=$(date +%s)
    : >"$GVISOR_FLEET_TEST_COUNTS"
    if "$@"; then
        status=passed
    else
        rc=$?
        # pytest exits 5 when it collected no test: a tier that tested nothing did not pass.
        if [ "$rc" = 5 ]; then status="FAILED (no tests collected)"; else status="FAILED (exit $rc)"; fi
        failed="$failed $tier"
    fi
    # One line per pytest session of the tier, added up.
    counts=$(awk '{ p += $1; f += $3; s += $5; a += substr($7, 2) }
        END { if (NR) printf "%d passed, %d failed, %d skipped (%d allowed)", p, f, s, a }' "$GVISOR_FLEET_TEST_COUNTS")
    line="tier $tier: $status in $(($(date +%s) - start)) s${counts:+: $counts}"
    echo "$line"
    summary="$summary$line
"
}

lint() {
    # Listed first and checked: git refuses a checkout another user owns
    # ("dubious ownership"), and shellcheck given no files fails with only its usage.
    scripts=$(git ls-files -co --exclude-standard '*.sh' tests/host/sandbox/systemctl tests/host/sandbox/journalctl) || scripts=""
    if [ -z "$scripts" ]; then
        echo "lint: 'git ls-files' listed no shell scripts in $PWD (git's message, if any, is above)."
        echo "lint: a checkout owned by another user needs: git config --global --add safe.directory \"$PWD\""
        return 1
    fi
    # A merge's conflict markers left in any tracked file (a page renders them as text).
    if git grep -n -E '^(<<<<<<<|>>>>>>>) ' -- .; then
        echo "lint: conflict markers above"
        return 1
    fi
    ruff check . && ruff format --check . && mypy || return 1
    echo "$scripts" | xargs shellcheck || return 1
    "$(sh tests/toolchain/build-actionlint.sh --print-path)" || return 1
    unformatted=$(gofmt -l tests/toolchain) || return 1
    [ -z "$unformatted" ] || { echo "not gofmt-formatted: $unformatted"; return 1; }
    # The docs site, strict: a broken link or anchor, or a page left out of
    # mkdocs.yml, fails. Built outside the checkout, then thrown away.
    site=$(mktemp -d) || return 1
    mkdocs build --strict --site-dir "$site"
    built=$?
    rm -rf "$site"
    [ "$built" = 0 ] || { echo "lint: mkdocs build --strict failed (see above)"; return 1; }
    echo "lint: clean"
}

# The host tier's sandboxes are independent machines of their own: four run at
# once (much of a sandbox's time is waiting on its daemons, so two left a third
# of the CPU idle). The machine running them is compared with its tree from
# before the tier in a session of its own, after every sandbox is gone.
host() {
    GVISOR_FLEET_MACHINE_BEFORE=$(mktemp) && export GVISOR_FLEET_MACHINE_BEFORE &&
        python -m tests.host.machine_tree > "$GVISOR_FLEET_MACHINE_BEFORE" || return 1
    rc=0
    python -m pytest -q -n 4 tests/host --deselect tests/host/test_machine_tree.py || rc=$?
    python -m pytest -q tests/host/test_machine_tree.py || rc=$?
    rm -f "$GVISOR_FLEET_MACHINE_BEFORE"
    return "$rc"
}

vm() { background_wait "vm: the Kubernetes builds started after the set-up" && python -m pytest -q tests/vm; }
cluster() { background_wait "cluster: the Kubernetes builds started after the set-up" && python -m pytest -q tests/cluster; }

for tier in $tiers; do
    case $tier in
        lint) run_tier lint lint ;;
        unit) run_tier unit python -m pytest -q -n 2 tests/unit tests/kube ;;
        host) run_tier host host ;;
        vm) run_tier vm vm ;;
        # A module's tests share its machines and stacks, so each module runs on one worker.
        e2e) run_tier e2e python -m pytest -q -n 2 --dist loadfile tests/e2e ;;
        cluster) run_tier cluster cluster ;;
        *) echo "unknown tier '$tier' (lint unit host e2e vm cluster)" >&2; exit 2 ;;
    esac
done

banner "summary"
printf '%s' "$summary"
if [ -n "$failed" ]; then
    echo "failed tiers:$failed"
    exit 1
fi
echo "all tiers passed: $tiers"
