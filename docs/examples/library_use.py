"""A Pulumi program of your own that uses gvisor-fleet's components.

It puts gVisor on machines two ways and then hands them to Kubernetes:

1. a machine your program already manages (here an existing host reached
   over SSH; in your program, an instance you create and its address) as a
   `Machine` record, given to `GvisorHost`;
2. machines described as gvisor-fleet stack config would describe them,
   checked by the same settings parser the stacks use and made or reached by
   `build_fleet`;
3. the Kubernetes layer on an existing cluster whose nodes are those machines.

The gvisor-fleet checkout must be importable (its `components` package on
PYTHONPATH) and its requirements installed; see docs/library.md.
"""

import pulumi
from pulumi_command import remote

from components.fleet.build import build_fleet
from components.fleet.machine import Machine
from components.gvisor.host import GvisorHost
from components.gvisor.settings import GvisorSettings
from components.kube.deploy import deploy_kubernetes
from components.settings import load_settings

config = pulumi.Config()
ssh_key = config.require_secret("sshPrivateKey")
kubeconfig = config.get_secret("kubeconfig")  # None: KUBECONFIG or ~/.kube/config

# 1. One machine of your own. Settings built directly are not checked: keep
#    to the values the configuration reference lists.
own_settings = GvisorSettings(release="20261116.0", docker="off", containerd="required")
db = Machine(
    name="db-1",
    arch="x86_64",
    user="admin",  # needs passwordless sudo
    connection=remote.ConnectionArgs(
        host="10.0.3.5",
        user="admin",
        private_key=ssh_key,
        host_key="ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOjHIEo7gPrw8qqnGM+asvQB3lkRSUGNABOTQhHVPfiD",
    ),
)
db_host = GvisorHost(db.name, db, own_settings)
pulumi.export("db1", db_host.facts)

# 2. Machines and settings as stack config would give them (the same keys as
#    stacks/Pulumi.<stack>.yaml, without the gvisor-fleet: prefix). A mistake
#    raises SettingsError naming the key, before anything is created.
settings = load_settings(
    {
        "release": "20261116.0",
        "containerd": "required",
        "docker": "off",
        "machines": [
            {"name": "node-amd64", "address": "10.0.3.11", "user": "admin", "arch": "x86_64"},
            {"name": "node-arm64", "address": "10.0.3.12", "user": "admin", "arch": "aarch64"},
        ],
        "kubernetes": {
            "cluster": "existing",
            "nodeNames": {"node-amd64": "ip-10-0-3-11", "node-arm64": "ip-10-0-3-12"},
        },
    },
    has_private_key=True,
)
hosts = {}
for machine in build_fleet(settings.machines, ssh_key):
    hosts[machine.name] = (machine, GvisorHost(machine.name, machine, settings.gvisor))

# 3. The RuntimeClass, the restricted namespace, samples and verification Jobs
#    on the cluster whose nodes these machines are.
assert settings.kubernetes is not None
kube = deploy_kubernetes(settings.kubernetes, hosts, kubeconfig, gvisor=settings.gvisor)
pulumi.export("nodes", {name: host.facts for name, (_, host) in hosts.items()})
pulumi.export(
    "allChecksPassed",
    pulumi.Output.all(db_host.checks_passed, *[h.checks_passed for _, h in hosts.values()]).apply(all),
)
pulumi.export("kubernetesVerification", kube.verification)
