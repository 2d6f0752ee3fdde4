"""The overhead measurement against real runsc, dockerd and containerd in a sandboxed host.

The script is run exactly as the OverheadMeasurement component runs it (on
stdin, the component's own command line), bounded by its budget, and must
leave no container, image, namespace or file behind.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from components.gvisor.settings import GvisorSettings
from components.overhead.measure import measure_command, measure_script, parse_overhead
from components.overhead.settings import OverheadSettings
from tests.host.host_state import changes, digest, ok
from tests.host.host_state import refusal as failed
from tests.host.sandbox import Sandbox
from tests.support.image import TEST_IMAGE
from tests.support.mirror import MIRROR_URL, Releases

pytestmark = pytest.mark.host

PREFIX = "/usr/local/bin"
RECORDED = Path(__file__).parents[1] / "report" / "recorded"
# Set to refresh the recordings the report tests and README.md use.
RECORD = bool(os.environ.get("GVISOR_FLEET_RECORD_OVERHEAD"))


def converge(host: Sandbox, releases: Releases, containerd: bool) -> GvisorSettings:
    """Installs gVisor and wires it into Docker (and containerd) with the agent, as `pulumi up` does."""
    from tests.host.agent_calls import configure_containerd, install

    gv = GvisorSettings(release=releases.current, base_url=MIRROR_URL, verify_image=TEST_IMAGE)
    ok(install(host, releases.current))
    ok(host.agent("docker-configure", "runsc", "false", PREFIX, "--network=sandbox", "--platform=systrap"))
    if containerd:
        ok(configure_containerd(host))
    return gv


def measure(host: Sandbox, gv: GvisorSettings, overhead: OverheadSettings, timeout: float = 600):
    command = measure_command(gv, overhead, sudo=False)
    # /tmp is the machine's own (shared by every sandbox); /var/tmp is the sandbox's.
    return host.run(["sh", "-c", command], stdin=measure_script(), timeout=timeout, env={"TMPDIR": "/var/tmp"})


# The engines' own volatile state, made by their first container and trimmed
# lazily (Docker keeps a network-namespace mount point per container for a while).
ENGINE_RUNTIME_STATE = ("/run/docker", "/run/containerd")


def files(host: Sandbox) -> dict[str, str]:
    """Every entry the sandbox wrote (host_state.digest), engine runtime state left out."""
    # TMPDIR's own mtime changes with every scratch folder made and removed in it.
    return {p: e for p, e in digest(host).items() if not p.startswith(ENGINE_RUNTIME_STATE) and p != "/var/tmp"}


def leftovers(host: Sandbox) -> str:
    return host.sh(
        "docker ps -aq --filter name=gvisor-fleet-overhead; docker images -q | wc -l;"
        " ctr namespaces ls -q | grep -x gvisor-fleet-overhead || true;"
        " ls -d /var/tmp/gvisor-fleet-overhead.* 2>/dev/null || true; pgrep -c -f '[r]unsc-sandbox' || true"
    )


def test_measures_runc_against_runsc_through_docker_and_leaves_nothing(host: Sandbox, releases: Releases):
    gv = converge(host, releases, containerd=False)
    before_leftovers = leftovers(host)
    files_before = files(host)
    started = time.monotonic()
    result = measure(host, gv, OverheadSettings(enabled=True, budget=240, runs=3, engine="docker"))
    took = time.monotonic() - started
    facts = ok(result)
    data = parse_overhead(facts["overhead"])
    assert took < 240, f"the budget bounds the whole run: {took:.0f}s"
    assert data["engine"] == "docker" and data["release"] == releases.current
    assert data["runsc_version"], data
    assert set(data["runtimes"]) == {"runc", "runsc/systrap"}
    assert "runsc/kvm" in data["skipped"]
    for runtime, figures in data["runtimes"].items():
        for figure in ("start_ms", "syscall_ms", "file_ms", "net_ms", "idle_rss_kib"):
            assert figure in figures, f"{runtime}: {figure} missing: {result.stderr}"
            assert figures[figure]["median"] > 0
        assert figures["start_ms"]["n"] == data["rounds"]
        assert figures["start_ms"]["p90"] >= figures["start_ms"]["median"]
    # The sandbox costs something: a syscall-heavy loop is slower under runsc.
    assert data["runtimes"]["runsc/systrap"]["syscall_ms"]["median"] > data["runtimes"]["runc"]["syscall_ms"]["median"]
    assert leftovers(host) == before_leftovers
    assert not changes(files_before, files(host)), "the measurement left files behind"
    if RECORD:
        (RECORDED / "host-docker.json").write_text(json.dumps(data, indent=1) + "\n")


def test_a_small_budget_stops_early_and_says_partial(host: Sandbox, releases: Releases):
    gv = converge(host, releases, containerd=False)
    before_leftovers = leftovers(host)
    started = time.monotonic()
    facts = ok(measure(host, gv, OverheadSettings(enabled=True, budget=30, runs=50, engine="docker")))
    assert time.monotonic() - started < 30
    data = parse_overhead(facts["overhead"])
    assert data["partial"] is True and data["rounds"] < 50
    assert leftovers(host) == before_leftovers


def test_an_engine_that_is_not_running_is_refused_and_nothing_changes(host: Sandbox, releases: Releases):
    gv = converge(host, releases, containerd=False)
    host.sh("systemctl stop docker")
    files_before = files(host)
    try:
        result = measure(host, gv, OverheadSettings(enabled=True, budget=60, runs=3, engine="docker"))
        assert "no configured container engine is running here" in failed(result)
        assert not changes(files_before, files(host))
    finally:
        host.sh("systemctl start docker")


@pytest.mark.parametrize("host2", ["no-config"], indirect=True)
def test_measures_through_containerd_2_in_a_namespace_of_its_own(host2: Sandbox, releases: Releases):
    gv = converge(host2, releases, containerd=True)
    before_leftovers = leftovers(host2)
    files_before = files(host2)
    result = measure(host2, gv, OverheadSettings(enabled=True, budget=240, runs=2, engine="containerd"))
    data = parse_overhead(ok(result)["overhead"])
    assert data["engine"] == "containerd"
    assert "runsc/systrap" in data["runtimes"], f"{data}\n{result.stderr}"
    runsc = data["runtimes"]["runsc/systrap"]
    for figure in ("start_ms", "syscall_ms", "file_ms", "idle_rss_kib"):
        assert figure in runsc and figure in data["runtimes"]["runc"], f"{json.dumps(data)}\n{result.stderr}"
    # ctr starts containers without CNI: runsc's netstack there gets no loopback
    # the benchmark can reach, so that one figure is named as missing, not invented.
    assert "net_ms" in data["runtimes"]["runc"]
    assert "net_ms" in runsc or "runsc/systrap: net not measured" in result.stderr
    # The other platform is measured where it runs, else named with the reason.
    assert "runsc/kvm" in data["runtimes"] or data["skipped"]["runsc/kvm"], data
    assert leftovers(host2) == before_leftovers
    assert "gvisor-fleet-overhead" not in host2.sh("ctr namespaces ls -q")
    assert not changes(files_before, files(host2)), "the measurement left files behind"
    if RECORD:
        (RECORDED / "host-containerd.json").write_text(json.dumps(data, indent=1) + "\n")
