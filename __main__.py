"""gvisor-fleet: machines of both architectures, gVisor on each, verified."""

import pulumi

from components.config import read_raw_config
from components.fleet.static import static_machine
from components.gvisor.host import GvisorHost
from components.settings import SettingsError, load_settings

config = pulumi.Config()
private_key = config.get_secret("sshPrivateKey")
try:
    settings = load_settings(read_raw_config(config), has_private_key=private_key is not None)
except SettingsError as err:
    raise pulumi.RunError(str(err)) from None

hosts = {}
for spec in settings.machines:
    assert private_key is not None  # load_settings demands it when machines exist
    machine = static_machine(spec, private_key)
    hosts[spec.name] = GvisorHost(spec.name, machine, settings.gvisor)

pulumi.export("gvisorRelease", settings.gvisor.release)
pulumi.export("machines", {name: host.facts for name, host in hosts.items()})
pulumi.export("allChecksPassed", pulumi.Output.all(*[h.checks_passed for h in hosts.values()]).apply(all))
