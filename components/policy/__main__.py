"""Entry point of the policy pack: `pulumi preview --policy-pack components/policy`.

The engine runs this directory with the interpreter of the virtualenv named in
PulumiPolicy.yaml (the project's .venv). The rules import the project's own
modules, so the repository root goes on the path first.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from pulumi_policy import EnforcementLevel, PolicyPack

from components.policy.pack import PACK_NAME, policies

PolicyPack(
    name=PACK_NAME,
    policies=policies(),
    enforcement_level=EnforcementLevel.MANDATORY,
    description="gVisor fleet guard rails: pinned releases, sandboxed workloads, consistent runtime names.",
)
