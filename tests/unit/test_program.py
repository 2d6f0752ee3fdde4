"""The whole program under mocks, driven by stack config like `pulumi preview`."""

from __future__ import annotations

import json
import runpy
from pathlib import Path

import pulumi
import pytest
from pulumi.runtime.settings import get_root_resource

from components.program import build
from tests.unit.mocks import AGENT_OUTPUT, KEY, RecordingMocks, configure, use

MAIN = Path(__file__).parents[2] / "__main__.py"


@pulumi.runtime.test
def test_every_machine_gets_a_verified_gvisor_host(mocks):
    machines = [
        {"name": "amd", "address": "10.0.2.1", "arch": "x86_64"},
        {"name": "arm", "address": "10.0.2.2", "arch": "aarch64", "user": "admin"},
    ]
    configure(machines=machines, sshPrivateKey=KEY, platform="systrap")
    program = build(pulumi.Config("gvisor-fleet"))
    assert set(program.hosts) == {"amd", "arm"}
    outputs = program.outputs()

    def check(args):
        machines_out, all_ok = args
        assert set(machines_out) == {"amd", "arm"}
        assert all_ok is True
        hosts = {r.name for r in mocks.of_type("gvisor-fleet:gvisor:GvisorHost")}
        assert hosts == {"amd", "arm"}
        arm_steps = [r for r in mocks.of_type("command:remote:Command") if r.name.startswith("arm-")]
        assert arm_steps and all(r.inputs["create"].startswith("sudo -n sh ") for r in arm_steps)
        for r in mocks.of_type("command:remote:Command"):
            assert KEY not in json.dumps(r.inputs.get("create")), r.name

    return pulumi.Output.all(outputs["machines"], outputs["allChecksPassed"]).apply(check)


@pytest.mark.parametrize(
    ("verify", "passed"),
    [
        (AGENT_OUTPUT["verify"], True),
        (AGENT_OUTPUT["verify"].replace("containerd_ok=true", "containerd_ok=false"), False),
        (AGENT_OUTPUT["verify"].replace("runsc_ok=true", "runsc_ok=false"), False),
        ("", False),  # verify printed nothing: no evidence is not a pass
    ],
    ids=["verified", "containerd-not-sandboxed", "runsc-failed", "no-output"],
)
@pulumi.runtime.test
def test_one_failing_verify_turns_the_exported_all_checks_passed_false(verify, passed):
    """__main__.py as `pulumi up` runs it: the stack output, not only checks_passed()."""
    mocks = use(RecordingMocks(stdout={"arm-verify": verify}))
    machines = [
        {"name": "amd", "address": "10.0.2.1", "arch": "x86_64"},
        {"name": "arm", "address": "10.0.2.2", "arch": "aarch64"},
    ]
    configure(machines=machines, sshPrivateKey=KEY)
    runpy.run_path(str(MAIN), run_name="__main__")
    exported = get_root_resource().outputs  # type: ignore[union-attr]

    def check(args):
        all_ok, facts = args
        assert all_ok is passed
        assert facts["amd"]["runsc_ok"] == "true", "the other machine's facts stay its own"
        assert {r.name for r in mocks.of_type("command:remote:Command")} >= {"amd-verify", "arm-verify"}

    return pulumi.Output.all(exported["allChecksPassed"], exported["machines"]).apply(check)


def test_bad_config_stops_the_program_with_every_key_named(mocks):
    configure(platform="ptrace", release="release-20261116.0", machines=[{"name": "a", "address": "h"}])
    with pytest.raises(pulumi.RunError) as err:
        build(pulumi.Config("gvisor-fleet"))
    text = str(err.value)
    for key in ("gvisor-fleet:platform", "gvisor-fleet:release", "gvisor-fleet:sshPrivateKey"):
        assert key in text
    assert mocks.resources == [], "nothing may be declared when the config is invalid"


def test_no_machines_is_a_valid_empty_stack(mocks):
    configure()
    assert build(pulumi.Config("gvisor-fleet")).hosts == {}


@pulumi.runtime.test
def test_kubernetes_layer_uses_the_hosts_runtime_name(mocks):
    machines = [
        {"name": "amd", "address": "10.0.2.1", "arch": "x86_64"},
        {"name": "arm", "address": "10.0.2.2", "arch": "aarch64"},
    ]
    configure(
        machines=machines,
        sshPrivateKey=KEY,
        runtimeName="gvisor-rt",
        kubernetes={"enabled": True, "cluster": "existing"},
    )
    program = build(pulumi.Config("gvisor-fleet"))
    outputs = program.outputs()
    assert "kubernetesVerification" in outputs

    def check(_):
        (runtime_class,) = mocks.of_type("kubernetes:node.k8s.io/v1:RuntimeClass")
        assert runtime_class.inputs["handler"] == "gvisor-rt"
        containerd_steps = [r for r in mocks.of_type("command:remote:Command") if r.name.endswith("-containerd")]
        assert len(containerd_steps) == 2
        assert all(" containerd-configure gvisor-rt " in r.inputs["create"] for r in containerd_steps)

    return outputs["kubernetesVerification"].apply(check)


def test_kubernetes_without_machines_fails_at_preview(mocks):
    configure(kubernetes={"enabled": True, "cluster": "k3s"})
    with pytest.raises(pulumi.RunError, match="gvisor-fleet:kubernetes"):
        build(pulumi.Config("gvisor-fleet"))


def test_image_builders_are_marked_for_the_policy_pack(mocks):
    machines = [
        {"name": "ci", "address": "10.0.2.1", "arch": "x86_64", "buildsImages": True},
        {"name": "web", "address": "10.0.2.2", "arch": "x86_64"},
    ]
    configure(machines=machines, sshPrivateKey=KEY)
    program = build(pulumi.Config("gvisor-fleet"))
    assert {name: host.builds_images for name, host in program.hosts.items()} == {"ci": True, "web": False}
