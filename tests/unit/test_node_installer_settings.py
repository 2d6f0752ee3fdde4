"""`gvisor-fleet:kubernetes.nodeInstaller`: defaults, and every refusal named by its key with a fix."""

from __future__ import annotations

import pytest

from components.fleet.specs import MachineSpec
from components.kube.settings import (
    DEFAULT_INSTALLER_IMAGE,
    DEFAULT_INSTALLER_NAMESPACE,
    KubeSettings,
    fleet_problems,
    installer_gvisor_problems,
    parse_kube_settings,
)
from components.settings import SettingsError, load_settings

KEY = "gvisor-fleet:kubernetes.nodeInstaller"
X86 = MachineSpec(name="m1", arch="x86_64", address="192.0.2.10")


def parse(raw: object) -> tuple[KubeSettings | None, list[str]]:
    problems: list[str] = []
    return parse_kube_settings(raw, "runsc", problems), problems


def test_off_unless_set():
    s, problems = parse({"enabled": True})
    assert problems == [] and s is not None and s.node_installer is None
    s, problems = parse({"nodeInstaller": False})
    assert problems == [] and s is not None and s.node_installer is None


@pytest.mark.parametrize("raw", [True, {}])
def test_true_or_an_empty_object_takes_the_defaults(raw):
    s, problems = parse({"nodeInstaller": raw})
    assert problems == [] and s is not None and s.node_installer is not None
    assert s.node_installer.image == DEFAULT_INSTALLER_IMAGE
    assert s.node_installer.namespace == DEFAULT_INSTALLER_NAMESPACE
    assert s.node_installer.arches == ("x86_64",)


def test_every_key_parses():
    s, problems = parse(
        {
            "nodeInstaller": {
                "image": "mirror.example.org/kubectl:1.36.3",
                "namespace": "gvisor-nodes",
                "arches": ["x86_64", "aarch64"],
            }
        }
    )
    assert problems == [] and s is not None and s.node_installer is not None
    assert s.node_installer.image == "mirror.example.org/kubectl:1.36.3"
    assert s.node_installer.namespace == "gvisor-nodes"
    assert s.node_installer.arches == ("x86_64", "aarch64")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"cluster": "k3s", "nodeInstaller": True},
         f"{KEY}: installs the nodes of an existing cluster, but gvisor-fleet:kubernetes.cluster is 'k3s'"),
        ({"cluster": "kubeadm", "nodeInstaller": True}, "set cluster: existing"),
        ({"nodeInstaller": {"namespace": "gvisor-sandbox"}},
         f"{KEY}.namespace: 'gvisor-sandbox' is also gvisor-fleet:kubernetes.namespace"),
        ({"namespace": "untrusted", "nodeInstaller": {"namespace": "untrusted"}}, "a namespace of its own"),
        ({"nodeInstaller": {"namespace": "kube-system"}}, f"{KEY}.namespace: 'kube-system' is shared"),
        ({"nodeInstaller": {"image": "Not An Image"}}, f"{KEY}.image: 'Not An Image' is not an image reference"),
        ({"nodeInstaller": {"arches": ["riscv64"]}}, f"{KEY}.arches"),
        ({"nodeInstaller": {"imagePullPolicy": "Always"}}, f"{KEY}.imagePullPolicy"),
        ({"nodeInstaller": "yes"}, f"{KEY}: must be an object or false"),
        ({"nodeNames": {"m1": "node-1"}, "nodeInstaller": True},
         "gvisor-fleet:kubernetes.nodeNames: names the nodes of machines, but with nodeInstaller"),
    ],
)  # fmt: skip
def test_refusals_name_the_key_and_the_fix(raw, expected):
    _, problems = parse(raw)
    assert any(expected in p for p in problems), problems


def test_machines_may_be_empty_and_must_be_with_the_installer():
    s, problems = parse({"nodeInstaller": True})
    assert s is not None and problems == []
    assert fleet_problems(s, [], "auto") == []
    (problem,) = fleet_problems(s, [X86], "auto")
    assert (
        problem.startswith("gvisor-fleet:machines: m1 would be installed over SSH")
        and "leave machines empty" in problem
    )
    (problem,) = fleet_problems(s, [], "off")
    assert problem.startswith("gvisor-fleet:containerd: 'off'") and "set it to auto or required" in problem


def test_without_the_installer_empty_machines_are_still_refused():
    s, _ = parse({"enabled": True})
    assert s is not None
    assert any("gvisor-fleet:machines is empty" in p for p in fleet_problems(s, [], "auto"))


def test_release_fetch_once_needs_ssh():
    s, _ = parse({"nodeInstaller": True})
    assert s is not None
    (problem,) = installer_gvisor_problems(s, "once")
    assert problem.startswith("gvisor-fleet:releaseFetch: 'once'") and problem.endswith("set releaseFetch to host")
    assert installer_gvisor_problems(s, "host") == []
    off, _ = parse({"enabled": True})
    assert off is not None and installer_gvisor_problems(off, "once") == []


def test_a_whole_stack_with_no_machines_loads():
    raw = {"kubernetes": {"cluster": "existing", "nodeInstaller": {"arches": ["x86_64", "aarch64"]}}}
    settings = load_settings(raw, has_private_key=False)
    assert settings.machines == () and settings.kubernetes is not None
    assert settings.kubernetes.node_installer is not None
    with pytest.raises(SettingsError, match=r"gvisor-fleet:kubernetes\.nodeInstaller: installs the nodes"):
        load_settings({"kubernetes": {"cluster": "k3s", "nodeInstaller": True}}, has_private_key=False)
