"""The kubeadm cluster as resources: a thin shell over `kubeadm` (the plan).

Per machine: the install step (its delete is the reset that puts the machine
back), the pod network; on the control plane: init, and per worker a fresh
join token, the worker's join, and a membership step (create: wait until the
node is Ready; delete: drain it and remove it). The kubeconfig is a secret.
Steps that carry a token or a kubeconfig log stderr only.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pulumi
from pulumi_command import remote

from components.gvisor.agent import parse_facts
from components.kube import kubeadm as plan
from components.kube.release_bundle import BundleError, bundle
from components.kube.settings import KubeadmSettings

if TYPE_CHECKING:
    from components.fleet.machine import Machine
    from components.gvisor.host import GvisorHost

Hosts = Mapping[str, "tuple[Machine, GvisorHost]"]


def _node_ip(stdout: str) -> str:
    ip = parse_facts(stdout).get("node_ip", "")
    if not ip:
        raise ValueError("the kubeadm install step printed no node_ip")
    return ip


def _network_line(
    node: plan.KubeadmNode, nodes: Sequence[plan.KubeadmNode], pod_subnet: str, ips: Sequence[Any]
) -> str:
    """The node's network step: a route to every other node's pod range through its address."""
    peers = {n.pod_cidr: str(ip) for n, ip in zip(nodes, ips, strict=True) if n.name != node.name}
    return plan.network_command(node, pod_subnet, peers)


def _join_stdin(node: plan.KubeadmNode, kubeadm: KubeadmSettings, outs: Sequence[Any]) -> str:
    install_out, token_out = outs
    join = plan.parse_join(str(token_out))
    endpoint = parse_facts(str(token_out)).get("endpoint", "")
    return plan.join_stdin(node, kubeadm, _node_ip(str(install_out)), endpoint, join)


class KubeadmCluster(pulumi.ComponentResource):
    """Upstream kubeadm on the fleet: one control plane, the other machines as workers."""

    kubeconfig: pulumi.Output[str]
    ready: dict[str, pulumi.Resource]

    def __init__(
        self,
        name: str,
        kubeadm: KubeadmSettings,
        hosts: Hosts,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("gvisor-fleet:kube:KubeadmCluster", name, None, opts)
        script = plan.node_script()
        machines = {n: m for n, (m, _) in hosts.items()}
        nodes = plan.plan_nodes(
            kubeadm,
            [(n, m.arch, m.user, _static_address(m)) for n, m in machines.items()],
        )
        cp = nodes[0]

        def command(
            step: str,
            machine: Machine,
            create: pulumi.Input[str],
            delete: str | None = None,
            depends_on: Sequence[pulumi.Resource] = (),
            triggers: Sequence[pulumi.Input[Any]] = (),
            secret: bool = False,
            stdin: pulumi.Input[str] = script,
        ) -> remote.Command:
            # A machine created anew (replaced VM) needs every step again.
            instance = [machine.instance] if machine.instance is not None else []
            return remote.Command(
                f"{name}-{step}",
                connection=machine.connection,
                create=create,
                delete=delete,
                stdin=stdin,
                triggers=[*triggers, *instance] or None,
                logging=remote.Logging.STDERR if secret else None,
                opts=pulumi.ResourceOptions(
                    parent=self,
                    depends_on=list(depends_on),
                    additional_secret_outputs=["stdout"] if secret else None,
                ),
            )

        installs: dict[str, remote.Command] = {}
        for node in nodes:
            after: list[pulumi.Resource] = [hosts[node.name][1]]
            if kubeadm.release_dir:
                after.append(self._copy(name, node, kubeadm, machines[node.name], after))
            installs[node.name] = command(
                f"{node.name}-install",
                machines[node.name],
                plan.install_command(node, kubeadm),
                plan.reset_command(node),
                depends_on=after,
            )
        ips = [installs[n.name].stdout.apply(_node_ip) for n in nodes]
        networks: dict[str, remote.Command] = {}
        for node in nodes:
            network = pulumi.Output.all(*ips).apply(functools.partial(_network_line, node, nodes, kubeadm.pod_subnet))
            networks[node.name] = command(
                f"{node.name}-network", machines[node.name], network, depends_on=[installs[node.name]]
            )
        cp_machine = machines[cp.name]
        init = command(
            f"{cp.name}-init",
            cp_machine,
            ips[0].apply(lambda ip: plan.init_command(cp, kubeadm, ip)),
            depends_on=[networks[cp.name]],
            triggers=[installs[cp.name].create],
        )
        cp_ready_create, _ = plan.member_commands(cp, cp.name, kubeadm.timeout_seconds)
        self.ready = {
            cp.name: command(f"{cp.name}-ready", cp_machine, cp_ready_create, depends_on=[init], triggers=[init.id])
        }
        for node in nodes[1:]:
            machine = machines[node.name]
            token = command(
                f"{node.name}-join-token",
                cp_machine,
                plan.join_token_command(cp, node.name, kubeadm.timeout_seconds),
                depends_on=[init],
                triggers=[installs[node.name].create, *([machine.instance] if machine.instance is not None else [])],
                secret=True,
            )
            config = pulumi.Output.all(installs[node.name].stdout, token.stdout).apply(
                functools.partial(_join_stdin, node, kubeadm)
            )
            join = command(
                f"{node.name}-join",
                machine,
                plan.join_command(node, kubeadm),
                depends_on=[networks[node.name], token],
                secret=True,
                stdin=pulumi.Output.secret(config),
            )
            wait, drain = plan.member_commands(cp, node.name, kubeadm.timeout_seconds)
            self.ready[node.name] = command(
                f"{node.name}-member", cp_machine, wait, drain, depends_on=[join], triggers=[join.id]
            )
        url = ips[0].apply(lambda ip: plan.api_url(kubeadm, ip))
        kubeconfig = command(
            "kubeconfig",
            cp_machine,
            url.apply(lambda u: plan.kubeconfig_command(cp, u, kubeadm.timeout_seconds)),
            # Once the control plane is a Ready node and serves its API document: the
            # Kubernetes layer starts from this kubeconfig.
            depends_on=[self.ready[cp.name]],
            triggers=[init.id],
            secret=True,
        )
        self.kubeconfig = pulumi.Output.secret(kubeconfig.stdout)
        self.register_outputs({"kubeconfig": self.kubeconfig, "controlPlane": cp.name})

    def _copy(
        self,
        name: str,
        node: plan.KubeadmNode,
        kubeadm: KubeadmSettings,
        machine: Machine,
        after: Sequence[pulumi.Resource],
    ) -> pulumi.Resource:
        """releaseDir's files for the node's arch, copied to the machine as one archive; removed again on destroy."""
        stage = plan.remote_stage(kubeadm, node.arch)
        try:
            archive = bundle(plan.local_release(kubeadm, node.arch))
        except BundleError as err:
            raise pulumi.RunError(str(err)) from None
        triggers = [machine.instance] if machine.instance is not None else []
        copy = remote.CopyToRemote(
            f"{name}-{node.name}-release-copy",
            connection=machine.connection,
            source=pulumi.FileAsset(str(archive)),
            remote_path=plan.remote_bundle(kubeadm, node.arch),
            triggers=triggers or None,
            opts=pulumi.ResourceOptions(parent=self, depends_on=list(after)),
        )
        sudo = "sudo -n " if node.sudo else ""
        return remote.Command(
            f"{name}-{node.name}-release-cleanup",
            connection=machine.connection,
            create="true",
            delete=f"{sudo}rm -rf {stage}",
            triggers=[stage, *triggers],
            opts=pulumi.ResourceOptions(parent=self, depends_on=[copy]),
        )


def _static_address(machine: Machine) -> str | None:
    """The machine's fleet-network address when the program knows it before `up` (an EC2 IP is an Output)."""
    return machine.private_address if isinstance(machine.private_address, str) else None
