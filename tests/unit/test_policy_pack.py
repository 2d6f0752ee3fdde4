"""The policy pack as the engine runs it, fed with the program's own resources.

- The program is built under Pulumi mocks for a given stack config; a mock
  monitor records each resource's URN, parent and inputs, as the engine
  would hand them to a policy.
- The pack is started the way the engine starts it (`python components/policy`,
  which prints its gRPC port) and asked over gRPC with pulumi's own analyzer
  protocol: GetAnalyzerInfo, Configure, Analyze, AnalyzeStack. So the
  PolicyPack wiring, pulumi_policy's (de)serialisation, unknown values and
  policy config are covered, not only the pure rules.

pulumi-policy ships no test helpers for Python packs; this is the nearest
thing to `pulumi preview --policy-pack` without the engine.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import grpc
import pulumi
import pytest
from google.protobuf import empty_pb2, json_format, struct_pb2
from pulumi.runtime.config import set_all_config
from pulumi.runtime.mocks import MockMonitor
from pulumi.runtime.proto import analyzer_pb2, analyzer_pb2_grpc
from pulumi_policy import EnforcementLevel, ResourceValidationPolicy, StackValidationPolicy
from pulumi_policy.proxy import UNKNOWN_STRING_VALUE

from components.fleet.keys import generate_ed25519
from components.policy import pack, rules
from components.program import build
from tests.support.bucket import publish_releases
from tests.unit.mocks import RecordingMocks

ROOT = Path(__file__).resolve().parents[2]
KEY = generate_ed25519("policy-test").private_key
MACHINES = [
    {"name": "build-1", "address": "10.0.2.1", "arch": "x86_64"},
    {"name": "edge-arm", "address": "10.0.2.2", "arch": "aarch64", "user": "admin"},
]
KUBE = {"enabled": True, "cluster": "existing"}
# A release listing for `latest` to resolve against (it is resolved when the program runs).
LISTED = publish_releases(Path(tempfile.mkdtemp(prefix="gvisor-fleet-listed-")), ["20261116.0"])


# --- the program under mocks ---------------------------------------------------------


class RecordingMonitor(MockMonitor):
    """Keeps each registration's URN and parent, which mock resource args lack."""

    def __init__(self, mocks: RecordingMocks) -> None:
        super().__init__(mocks)
        self.registered: list[tuple[str, str, str, str]] = []

    def RegisterResource(self, request: Any) -> Any:
        response = super().RegisterResource(request)
        self.registered.append((response.urn, request.type, request.name, request.parent))
        return response


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def program_resources(stack: str, **config: object) -> list[rules.Resource]:
    """Every resource the program declares for this stack config, as a policy would see it."""
    mocks = RecordingMocks()
    monitor = RecordingMonitor(mocks)
    pulumi.runtime.set_mocks(mocks, project="gvisor-fleet", stack=stack, preview=False, monitor=monitor)
    values = {"sshPrivateKey": KEY, **config}
    set_all_config(
        {f"gvisor-fleet:{k}": v if isinstance(v, str) else json.dumps(v) for k, v in values.items()},
        secret_keys=["gvisor-fleet:sshPrivateKey"],
    )

    @pulumi.runtime.test
    def run() -> pulumi.Output[Any]:
        return pulumi.Output.all(*build(pulumi.Config("gvisor-fleet")).outputs().values())

    run()
    inputs = {(r.typ, r.name): r.inputs for r in mocks.resources}
    return [
        rules.Resource(urn, typ, name, _jsonable(inputs.get((typ, name), {})), parent or None)
        for urn, typ, name, parent in monitor.registered
    ]


# --- the pack over gRPC --------------------------------------------------------------


@pytest.fixture(scope="module")
def analyzer() -> Iterator[analyzer_pb2_grpc.AnalyzerStub]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULUMI_")}
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "components" / "policy")],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 60)
        line = proc.stdout.readline().decode().strip() if ready else ""
        if not line.isdigit():
            proc.kill()
            _, err = proc.communicate(timeout=10)
            pytest.fail(f"the policy pack did not print its port: {line!r}\n{err.decode()}")
        with grpc.insecure_channel(f"127.0.0.1:{line}") as channel:
            yield analyzer_pb2_grpc.AnalyzerStub(channel)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def to_struct(props: Mapping[str, Any]) -> struct_pb2.Struct:
    def wire(value: Any) -> Any:
        if value is rules.UNKNOWN:
            return UNKNOWN_STRING_VALUE
        if isinstance(value, Mapping):
            return {k: wire(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [wire(v) for v in value]
        return value

    return json_format.ParseDict(wire(dict(props)), struct_pb2.Struct())


def analyzer_resource(r: rules.Resource) -> analyzer_pb2.AnalyzerResource:
    return analyzer_pb2.AnalyzerResource(
        type=r.type,
        urn=r.urn,
        name=r.name,
        properties=to_struct(r.props),
        parent=r.parent or "",
        options=analyzer_pb2.AnalyzerResourceOptions(parent=r.parent or ""),
    )


def analyze_stack(stub: analyzer_pb2_grpc.AnalyzerStub, resources: list[rules.Resource]) -> list[Any]:
    request = analyzer_pb2.AnalyzeStackRequest(resources=[analyzer_resource(r) for r in resources])
    return list(stub.AnalyzeStack(request).diagnostics)


def analyze_each(stub: analyzer_pb2_grpc.AnalyzerStub, resources: list[rules.Resource]) -> list[Any]:
    diagnostics = []
    for r in resources:
        request = analyzer_pb2.AnalyzeRequest(
            type=r.type,
            urn=r.urn,
            name=r.name,
            properties=to_struct(r.props),
            options=analyzer_pb2.AnalyzerResourceOptions(parent=r.parent or ""),
        )
        diagnostics.extend(stub.Analyze(request).diagnostics)
    return diagnostics


def configure(stub: analyzer_pb2_grpc.AnalyzerStub, **per_policy: Mapping[str, Any]) -> None:
    """Policy config as `--policy-pack-config` delivers it; no argument resets it."""
    config = {
        name: analyzer_pb2.PolicyConfig(enforcementLevel=analyzer_pb2.MANDATORY, properties=to_struct(props))
        for name, props in per_policy.items()
    }
    stub.Configure(analyzer_pb2.ConfigureAnalyzerRequest(policyConfig=config))


def names(diagnostics: list[Any]) -> list[str]:
    return sorted(d.policyName for d in diagnostics)


# --- tests -----------------------------------------------------------------------------


def test_pack_declares_every_rule_as_mandatory():
    policies = pack.policies()
    assert [p.name for p in policies] == [r.name for r in rules.RULES]
    assert all(p.enforcement_level == EnforcementLevel.MANDATORY for p in policies)
    assert isinstance(policies[0], ResourceValidationPolicy)
    assert all(isinstance(p, StackValidationPolicy) for p in policies[1:])


def test_analyzer_info_lists_the_policies_and_their_config(analyzer):
    info = analyzer.GetAnalyzerInfo(empty_pb2.Empty())
    assert info.name == pack.PACK_NAME
    by_name = {p.name: p for p in info.policies}
    assert set(by_name) == {r.name for r in rules.RULES}
    assert all(p.enforcementLevel == analyzer_pb2.MANDATORY for p in info.policies)
    schema = json_format.MessageToDict(by_name["no-default-runtime-on-image-builders"].configSchema.properties)
    assert "imageBuilders" in schema


def test_the_products_default_stack_passes_every_policy(analyzer):
    configure(analyzer)
    resources = program_resources("prod", machines=MACHINES, kubernetes=KUBE)
    types = {r.type for r in resources}
    assert {rules.COMMAND_TYPE, rules.RUNTIME_CLASS_TYPE, "kubernetes:core/v1:Pod", "kubernetes:batch/v1:Job"} <= types
    assert analyze_each(analyzer, resources) == []
    assert analyze_stack(analyzer, resources) == []


def test_latest_release_fails_a_prod_preview_and_passes_a_dev_one(analyzer):
    configure(analyzer)
    prod = analyze_each(analyzer, program_resources("prod", machines=MACHINES, release="latest", baseUrl=LISTED))
    assert names(prod) == ["gvisor-release-pinned", "gvisor-release-pinned"]
    assert all(d.enforcementLevel == analyzer_pb2.MANDATORY for d in prod)
    assert {d.urn.rsplit("::", 1)[1] for d in prod} == {"build-1-install", "edge-arm-install"}
    assert "pin a dated release" in prod[0].message
    assert analyze_each(analyzer, program_resources("dev", machines=MACHINES, release="latest", baseUrl=LISTED)) == []
    configure(analyzer, **{"gvisor-release-pinned": {"devStacks": ["prod"]}})
    assert analyze_each(analyzer, program_resources("prod", machines=MACHINES, release="latest", baseUrl=LISTED)) == []


def test_default_runtime_on_an_image_builder_fails_through_policy_config(analyzer):
    resources = program_resources("prod", machines=MACHINES, defaultRuntime=True)
    configure(analyzer)
    assert analyze_stack(analyzer, resources) == []
    configure(analyzer, **{"no-default-runtime-on-image-builders": {"imageBuilders": ["build-*"]}})
    (d,) = analyze_stack(analyzer, resources)
    assert d.policyName == "no-default-runtime-on-image-builders"
    assert d.urn.endswith("::build-1-docker")
    assert "machine 'build-1' builds images" in d.message


def test_a_pod_added_to_the_sandbox_namespace_without_the_runtime_class_fails(analyzer):
    configure(analyzer)
    resources = program_resources("prod", machines=MACHINES, kubernetes={**KUBE, "namespace": "untrusted"})
    typ = "kubernetes:apps/v1:Deployment"
    deployment = rules.Resource(
        f"urn:pulumi:prod::gvisor-fleet::{typ}::web",
        typ,
        "web",
        {
            "metadata": {"name": "web", "namespace": "untrusted"},
            "spec": {"template": {"spec": {"containers": [{"name": "web", "image": "nginx"}]}}},
        },
    )
    (d,) = analyze_stack(analyzer, [*resources, deployment])
    assert d.policyName == "sandbox-workloads-use-gvisor"
    assert d.urn == deployment.urn
    assert "Deployment 'untrusted/web'" in d.message


def test_a_runtime_class_with_another_handler_fails(analyzer):
    configure(analyzer)
    resources = program_resources("prod", machines=MACHINES, kubernetes=KUBE)
    changed = [
        rules.Resource(r.urn, r.type, r.name, {**r.props, "handler": "kata"}, r.parent)
        if r.type == rules.RUNTIME_CLASS_TYPE
        else r
        for r in resources
    ]
    diagnostics = analyze_stack(analyzer, changed)
    assert names(diagnostics) == ["runtime-names-match-handler"] * 2  # one per machine
    assert "handler 'kata'" in diagnostics[0].message


def test_unknown_values_are_advisory_and_real_violations_still_count(analyzer):
    configure(analyzer)
    typ = "kubernetes:core/v1:Pod"

    def pod(name: str, namespace: object) -> rules.Resource:
        props = {"metadata": {"name": name, "namespace": namespace}, "spec": {"containers": []}}
        return rules.Resource(f"urn:pulumi:prod::gvisor-fleet::{typ}::{name}", typ, name, props)

    unknown, bare = pod("later", rules.UNKNOWN), pod("bare", rules.DEFAULT_SANDBOX_NAMESPACE)
    diagnostics = analyze_stack(analyzer, [unknown, bare])
    by_level = {d.enforcementLevel: d for d in diagnostics}
    assert len(diagnostics) == 2
    assert by_level[analyzer_pb2.MANDATORY].urn == bare.urn
    advisory = by_level[analyzer_pb2.ADVISORY]
    assert "during preview: Pod 'later': metadata.namespace is not known yet" in advisory.message
    step = rules.Resource(
        f"urn:pulumi:prod::gvisor-fleet::{rules.COMMAND_TYPE}::m-install", rules.COMMAND_TYPE, "m-install", {}
    )
    unknown_create = rules.Resource(step.urn, step.type, step.name, {"create": rules.UNKNOWN})
    assert analyze_each(analyzer, [unknown_create]) == []


def test_plain_turns_proxies_and_unknowns_into_plain_data():
    from pulumi_policy.proxy import unknown_checking_proxy

    proxied = unknown_checking_proxy({"a": {"b": [1, UNKNOWN_STRING_VALUE]}, "c": UNKNOWN_STRING_VALUE})
    assert pack.plain(proxied) == {"a": {"b": [1, rules.UNKNOWN]}, "c": rules.UNKNOWN}


def test_a_typo_in_the_policy_config_stops_the_preview(analyzer):
    configure(analyzer, **{"gvisor-release-pinned": {"devStack": ["prod"]}})
    step = rules.Resource(
        f"urn:pulumi:prod::gvisor-fleet::{rules.COMMAND_TYPE}::m-install",
        rules.COMMAND_TYPE,
        "m-install",
        {"create": "sh -s -- install https://example.invalid latest /usr/local/bin -"},
    )
    with pytest.raises(grpc.RpcError, match=r"gvisor-release-pinned: policy config: unknown key\(s\) devStack"):
        analyze_each(analyzer, [step])
    configure(analyzer)


INSTALLER_KUBE = {"cluster": "existing", "nodeInstaller": True}


def test_the_node_installer_stack_passes_and_its_privileged_pods_are_the_only_ones_allowed(analyzer):
    configure(analyzer)
    resources = program_resources("prod", machines=[], kubernetes=INSTALLER_KUBE)
    daemonsets = [r for r in resources if r.type == "kubernetes:apps/v1:DaemonSet"]
    assert len(daemonsets) == 2 and all(
        r.props["spec"]["template"]["spec"]["containers"][0]["securityContext"]["privileged"] for r in daemonsets
    )
    assert analyze_each(analyzer, resources) == []
    assert analyze_stack(analyzer, resources) == []
    # The same pod spec anywhere else is refused: another DaemonSet, or the installer's moved to another namespace.
    installer = daemonsets[0]
    typ = installer.type
    elsewhere = rules.Resource(
        f"urn:pulumi:prod::gvisor-fleet::{typ}::node-tool",
        typ,
        "node-tool",
        {**installer.props, "metadata": {"name": "node-tool", "namespace": "tools", "labels": {"app": "node-tool"}}},
    )
    moved = rules.Resource(
        installer.urn, typ, installer.name,
        {**installer.props, "metadata": {**installer.props["metadata"], "namespace": "default"}}, installer.parent,
    )  # fmt: skip
    diagnostics = analyze_stack(analyzer, [*[r for r in resources if r is not installer], elsewhere, moved])
    assert names(diagnostics) == ["privileged-pods-only-for-the-node-installer"] * 2
    assert {d.urn for d in diagnostics} == {elsewhere.urn, installer.urn}
    assert "DaemonSet 'tools/node-tool' reaches into its node (hostPID: true, hostNetwork: true" in "".join(
        d.message for d in diagnostics
    )


def test_a_latest_release_in_the_node_installer_fails_a_prod_preview(analyzer):
    configure(analyzer)
    resources = program_resources("prod", machines=[], kubernetes=INSTALLER_KUBE, release="latest")
    (d,) = analyze_each(analyzer, resources)
    assert d.policyName == "gvisor-release-pinned" and d.urn.endswith("::kubernetes-installer-config")
    assert "machine 'the node installer's nodes' installs gVisor release 'latest'" in d.message
