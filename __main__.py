"""gvisor-fleet: machines of both architectures, gVisor on each, verified."""

import pulumi

from components.program import build

for name, value in build(pulumi.Config()).outputs().items():
    pulumi.export(name, value)
