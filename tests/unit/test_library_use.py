"""docs/examples/library_use.py, the library example of docs/library.md, runs under Pulumi mocks.

It is run as Pulumi runs a program (`__main__`), with only its secrets set
by the test, and must declare what the page says it does: gVisor on each
machine, verified, and the Kubernetes layer on those machines. The page
shows the file itself, so the two cannot differ.
"""

from __future__ import annotations

import re
import runpy
from pathlib import Path
from typing import Any

import pulumi
from pulumi.runtime.config import set_all_config
from pulumi.runtime.settings import get_root_resource

from components.fleet.keys import generate_ed25519
from tests.unit.mocks import use
from tests.unit.stack_mocks import KUBECONFIG, StackMocks

DOCS = Path(__file__).parents[2] / "docs"
EXAMPLE = DOCS / "examples" / "library_use.py"
KEY = generate_ed25519("library-test").private_key


def test_the_page_shows_the_example_file():
    page = (DOCS / "library.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", page, re.S)
    assert EXAMPLE.read_text() in blocks, "docs/library.md must show docs/examples/library_use.py as it is"


@pulumi.runtime.test
def test_the_example_program_runs_under_mocks():
    mocks = use(StackMocks(), stack="library")
    set_all_config(
        {"gvisor-fleet:sshPrivateKey": KEY, "gvisor-fleet:kubeconfig": KUBECONFIG},
        secret_keys=["gvisor-fleet:sshPrivateKey", "gvisor-fleet:kubeconfig"],
    )
    runpy.run_path(str(EXAMPLE), run_name="__main__")
    exported = get_root_resource().outputs  # type: ignore[union-attr]

    def check(args: list[Any]) -> None:
        all_ok, verification, nodes = args
        assert all_ok is True
        hosts = {r.name for r in mocks.of_type("gvisor-fleet:gvisor:GvisorHost")}
        assert hosts == {"db-1", "node-amd64", "node-arm64"}
        assert set(nodes) == {"node-amd64", "node-arm64"}
        (runtime_class,) = mocks.of_type("kubernetes:node.k8s.io/v1:RuntimeClass")
        assert runtime_class.inputs["handler"] == "runsc"
        assert set(verification) == {"amd64", "arm64"} and all(v["passed"] for v in verification.values())
        steps = {r.name for r in mocks.of_type("command:remote:Command")}
        assert "db-1-containerd" in steps and "db-1-docker" not in steps, "docker off, containerd required"

    return pulumi.Output.all(exported["allChecksPassed"], exported["kubernetesVerification"], exported["nodes"]).apply(
        check
    )
