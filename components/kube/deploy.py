"""The Kubernetes side as resources: a thin shell over `manifests` and `k3s`.

`deploy_kubernetes` is the one entry point. It checks the settings against
the fleet (a problem stops `pulumi preview`, naming the config key), then
builds:

- `KubeadmCluster` (cluster: kubeadm, kubeadm_cluster.py): upstream kubeadm
  on the machines over the host layer's containerd, the kubeconfig as a secret;
- `K3sCluster` (cluster: k3s): k3s on the machines, the gVisor runtime in
  k3s's containerd, the kubeconfig as a secret;
- `NodeInstaller` (kubernetes.nodeInstaller, node_installer.py): the nodes
  install, verify and label themselves from inside the cluster;
- `KubeDeployment`: node labels (set only where gVisor was verified), the
  RuntimeClass, the restricted namespace with a default-deny NetworkPolicy,
  one sample pod and one verification Job per architecture.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pulumi
import pulumi_kubernetes as k8s
from pulumi_command import remote

from components.fleet.specs import MachineSpec
from components.gvisor.agent import parse_facts
from components.kube import k3s as k3s_plan
from components.kube import node_installer as installer_plan
from components.kube.manifests import (
    default_deny,
    job_result,
    kube_arch,
    namespace,
    node_label_patch,
    node_label_value,
    node_verified,
    runtime_class,
    runtime_fingerprint,
    sample_pod,
    verify_job,
    workload_account,
)
from components.kube.settings import KEY, K3sSettings, KubeSettings, fleet_problems, installer_gvisor_problems

if TYPE_CHECKING:
    from components.fleet.machine import Machine
    from components.gvisor.host import GvisorHost
    from components.gvisor.settings import GvisorSettings

Hosts = Mapping[str, "tuple[Machine, GvisorHost]"]
# Seconds the Kubernetes provider waits for one answer of the API server (its default: 32).
API_REQUEST_SECONDS = 300


def deployment_problems(settings: KubeSettings, hosts: Hosts, gvisor: GvisorSettings) -> list[str]:
    """What stops the deployment before any resource exists, one line per problem."""
    specs = []
    for name, (machine, _) in hosts.items():
        host = machine.connection.host
        specs.append(MachineSpec(name=name, arch=machine.arch, address=host if isinstance(host, str) else ""))
    problems = fleet_problems(settings, specs, gvisor.containerd)
    problems += installer_gvisor_problems(settings, gvisor.release_fetch)
    if settings.handler != gvisor.runtime_name:
        problems.append(
            f"gvisor-fleet:runtimeName: the RuntimeClass handler '{settings.handler}' differs from the "
            f"runtime '{gvisor.runtime_name}' written into containerd; parse {KEY} with the same runtimeName"
        )
    return problems


def deploy_kubernetes(
    settings: KubeSettings,
    hosts: Hosts,
    kubeconfig: pulumi.Output[str] | None,
    opts: pulumi.ResourceOptions | None = None,
    *,
    gvisor: GvisorSettings,
) -> KubeDeployment:
    """RuntimeClass, sandboxed samples and their proof on the fleet's cluster.

    `kubeconfig` is used for cluster 'existing' (None: the provider reads
    KUBECONFIG or ~/.kube/config); clusters 'kubeadm' and 'k3s' make their own.
    """
    problems = deployment_problems(settings, hosts, gvisor)
    if problems:
        body = "\n".join(f"  - {p}" for p in problems)
        raise pulumi.RunError(f"invalid stack configuration:\n{body}")
    return KubeDeployment("kubernetes", settings, hosts, kubeconfig, gvisor, opts)


def _agent_install(node: k3s_plan.K3sNode, k3s: K3sSettings, outs: Sequence[Any]) -> str:
    join_url, token = outs
    return k3s_plan.install_command(node, k3s, str(join_url), "-", token=str(token).strip())


def _facts(outs: Sequence[Any]) -> dict[str, str]:
    host_facts, stdout = outs
    return {**dict(host_facts), **parse_facts(stdout)}


class K3sCluster(pulumi.ComponentResource):
    """k3s on the fleet: the first machine serves, the others join as agents."""

    kubeconfig: pulumi.Output[str]
    node_facts: dict[str, pulumi.Output[dict[str, str]]]
    nodes_ready: remote.Command

    def __init__(
        self,
        name: str,
        k3s: K3sSettings,
        hosts: Hosts,
        gvisor: GvisorSettings,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("gvisor-fleet:kube:K3sCluster", name, None, opts)
        script = k3s_plan.node_script()
        items = list(hosts.items())
        nodes = k3s_plan.plan_nodes([(n, m.arch, m.user) for n, (m, _) in items])
        server, (server_machine, _) = nodes[0], items[0][1]
        server_host = pulumi.Output.from_input(server_machine.connection.host)

        def command(
            step: str,
            machine: Machine,
            create: pulumi.Input[str],
            delete: str | None = None,
            depends_on: Sequence[pulumi.Resource] = (),
            triggers: Sequence[pulumi.Input[str | None]] | None = None,
            secret_stdout: bool = False,
        ) -> remote.Command:
            # A machine created anew (replaced VM) needs every step again.
            instance = getattr(machine, "instance", None)
            all_triggers = [*(triggers or []), *([instance] if instance is not None else [])]
            return remote.Command(
                f"{name}-{step}",
                connection=machine.connection,
                create=create,
                delete=delete,
                stdin=script,
                triggers=all_triggers or None,
                logging=remote.Logging.STDERR if secret_stdout else None,
                opts=pulumi.ResourceOptions(
                    parent=self,
                    depends_on=list(depends_on),
                    additional_secret_outputs=["stdout"] if secret_stdout else None,
                ),
            )

        installs: dict[str, remote.Command] = {}
        server_create = server_host.apply(
            lambda h: k3s_plan.install_command(server, k3s, "-", k3s_plan.tls_san(k3s, h))
        )
        installs[server.name] = command(
            f"{server.name}-install",
            server_machine,
            server_create,
            k3s_plan.uninstall_command(server),
            depends_on=[items[0][1][1]],
        )
        token = command(
            "token",
            server_machine,
            k3s_plan.token_command(server),
            depends_on=[installs[server.name]],
            triggers=[installs[server.name].create],
            secret_stdout=True,
        )
        join_url = server_host.apply(lambda h: k3s_plan.server_url(k3s, h))
        for node, (_, (machine, host)) in zip(nodes[1:], items[1:], strict=True):
            create = pulumi.Output.all(join_url, token.stdout).apply(functools.partial(_agent_install, node, k3s))
            installs[node.name] = command(
                f"{node.name}-install",
                machine,
                pulumi.Output.secret(create),
                k3s_plan.uninstall_command(node),
                depends_on=[host, token],
            )

        runtimes: dict[str, remote.Command] = {}
        for node, (_, (machine, host)) in zip(nodes, items, strict=True):
            create_rt, delete_rt = k3s_plan.runtime_commands(node, gvisor, k3s)
            runtimes[node.name] = command(
                f"{node.name}-runtime", machine, create_rt, delete_rt, depends_on=[installs[node.name], host]
            )
        self.nodes_ready = command(
            "nodes-ready",
            server_machine,
            k3s_plan.wait_nodes_command(server, nodes),
            depends_on=list(runtimes.values()),
            triggers=[r.create for r in runtimes.values()],
        )
        kubeconfig = command(
            "kubeconfig",
            server_machine,
            server_host.apply(lambda h: k3s_plan.kubeconfig_command(server, k3s_plan.api_url(k3s, h))),
            depends_on=[installs[server.name]],
            triggers=[installs[server.name].create],
            secret_stdout=True,
        )
        self.kubeconfig = pulumi.Output.secret(kubeconfig.stdout)
        self.node_facts = {n: pulumi.Output.all(hosts[n][1].facts, runtimes[n].stdout).apply(_facts) for n in runtimes}
        self.register_outputs({"kubeconfig": self.kubeconfig, "nodeFacts": self.node_facts})


class NodeInstaller(pulumi.ComponentResource):
    """The nodes install, verify and label themselves: the agent in a privileged DaemonSet.

    Destroy order is the point of the graph: whatever runs sandboxes depends
    on `cleanup`, which depends on `installer`, which depends on the rest. So
    the sandboxes go first; then the cleanup DaemonSet, whose pods, as their
    DaemonSet is deleted, restore each node (the program waits until they
    are gone); then the installer, its permissions and its namespace.
    """

    installer: k8s.apps.v1.DaemonSet
    cleanup: k8s.apps.v1.DaemonSet
    fingerprint: str

    def __init__(
        self,
        name: str,
        settings: KubeSettings,
        gvisor: GvisorSettings,
        provider: k8s.Provider,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("gvisor-fleet:kube:NodeInstaller", name, None, opts)
        s, gv = settings, gvisor

        def opts_(*depends_on: pulumi.Resource) -> pulumi.ResourceOptions:
            return pulumi.ResourceOptions(parent=self, provider=provider, depends_on=list(depends_on))

        ns = installer_plan.installer_namespace(s)
        namespace = k8s.core.v1.Namespace(f"{name}-namespace", metadata=ns["metadata"], opts=opts_())
        sa = installer_plan.service_account(s)
        account = k8s.core.v1.ServiceAccount(f"{name}-account", metadata=sa["metadata"], opts=opts_(namespace))
        cr, crb = installer_plan.cluster_role(s), installer_plan.cluster_role_binding(s)
        cluster_role = k8s.rbac.v1.ClusterRole(
            f"{name}-node-role", metadata=cr["metadata"], rules=cr["rules"], opts=opts_()
        )
        cluster_binding = k8s.rbac.v1.ClusterRoleBinding(
            f"{name}-node-binding",
            metadata=crb["metadata"],
            role_ref=crb["roleRef"],
            subjects=crb["subjects"],
            opts=opts_(cluster_role, account),
        )
        r, rb = installer_plan.role(s), installer_plan.role_binding(s)
        role = k8s.rbac.v1.Role(f"{name}-role", metadata=r["metadata"], rules=r["rules"], opts=opts_(namespace))
        binding = k8s.rbac.v1.RoleBinding(
            f"{name}-binding",
            metadata=rb["metadata"],
            role_ref=rb["roleRef"],
            subjects=rb["subjects"],
            opts=opts_(role, account),
        )
        er, erb = installer_plan.event_role(s), installer_plan.role_binding(s, installer_plan.EVENT_NAMESPACE)
        event_role = k8s.rbac.v1.Role(f"{name}-event-role", metadata=er["metadata"], rules=er["rules"], opts=opts_())
        event_binding = k8s.rbac.v1.RoleBinding(
            f"{name}-event-binding",
            metadata=erb["metadata"],
            role_ref=erb["roleRef"],
            subjects=erb["subjects"],
            opts=opts_(event_role, account),
        )
        vap, vapb = installer_plan.admission_policy(s), installer_plan.admission_policy_binding(s)
        policy = k8s.admissionregistration.v1.ValidatingAdmissionPolicy(
            f"{name}-node-policy", metadata=vap["metadata"], spec=vap["spec"], opts=opts_()
        )
        policy_binding = k8s.admissionregistration.v1.ValidatingAdmissionPolicyBinding(
            f"{name}-node-policy-binding", metadata=vapb["metadata"], spec=vapb["spec"], opts=opts_(policy)
        )
        cm = installer_plan.config_map(s, gv)
        config = k8s.core.v1.ConfigMap(
            f"{name}-config", metadata=cm["metadata"], data=cm["data"], opts=opts_(namespace)
        )
        # No node is patched before the policy that confines the patch is in force.
        before = [namespace, account, cluster_binding, binding, event_binding, policy_binding, config]
        ds = installer_plan.daemonset(s, gv)
        self.installer = k8s.apps.v1.DaemonSet(
            f"{name}-daemonset", metadata=ds["metadata"], spec=ds["spec"], opts=opts_(*before)
        )
        cds = installer_plan.daemonset(s, gv, cleanup=True)
        self.cleanup = k8s.apps.v1.DaemonSet(
            f"{name}-cleanup", metadata=cds["metadata"], spec=cds["spec"], opts=opts_(*before, self.installer)
        )
        self.fingerprint = installer_plan.config_digest(cm["data"])
        self.register_outputs({})


class KubeDeployment(pulumi.ComponentResource):
    """gVisor as a RuntimeClass, with sandboxed samples and in-cluster proof per architecture."""

    verification: pulumi.Output[dict[str, Any]]
    kubeconfig: pulumi.Output[str] | None
    runtime_class_name: pulumi.Output[str]
    node_labels: dict[str, pulumi.Output[str]]

    def __init__(
        self,
        name: str,
        settings: KubeSettings,
        hosts: Hosts,
        kubeconfig: pulumi.Output[str] | None,
        gvisor: GvisorSettings,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("gvisor-fleet:kube:KubeDeployment", name, None, opts)
        s = settings
        ready: dict[str, Sequence[pulumi.Resource]]
        if s.cluster == "k3s":
            cluster = K3sCluster(f"{name}-k3s", s.k3s, hosts, gvisor, pulumi.ResourceOptions(parent=self))
            self.kubeconfig = cluster.kubeconfig
            facts = cluster.node_facts
            ready = {n: [cluster.nodes_ready] for n in hosts}
        elif s.cluster == "kubeadm":
            from components.kube.kubeadm_cluster import KubeadmCluster

            formed = KubeadmCluster(f"{name}-kubeadm", s.kubeadm, hosts, pulumi.ResourceOptions(parent=self))
            self.kubeconfig = formed.kubeconfig
            # The host's own containerd runs the pods: its verified facts say it all.
            facts = {n: host.facts for n, (_, host) in hosts.items()}
            ready = {n: [formed.ready[n], host] for n, (_, host) in hosts.items()}
        else:
            self.kubeconfig = pulumi.Output.secret(kubeconfig) if kubeconfig is not None else None
            facts = {n: host.facts for n, (_, host) in hosts.items()}
            ready = {n: [host] for n, (_, host) in hosts.items()}

        provider = k8s.Provider(
            f"{name}-provider",
            kubeconfig=self.kubeconfig,
            enable_server_side_apply=True,
            # The provider's default of 32 s per request also bounds its first read of the
            # API server's OpenAPI document, which a busy small control plane can take longer
            # to send; a run then fails before any object is made.
            kube_client_settings=k8s.KubeClientSettingsArgs(timeout=API_REQUEST_SECONDS),
            opts=pulumi.ResourceOptions(parent=self),
        )

        def opts_(depends_on: Sequence[pulumi.Resource] = (), replace: bool = False) -> pulumi.ResourceOptions:
            # Objects with fixed names must go before their replacement comes.
            return pulumi.ResourceOptions(
                parent=self, provider=provider, depends_on=list(depends_on), delete_before_replace=replace
            )

        installer = None
        if s.node_installer is not None:
            installer = NodeInstaller(f"{name}-installer", s, gvisor, provider, pulumi.ResourceOptions(parent=self))
        # Label each node only once its runtime passed verification; the
        # RuntimeClass schedules onto that label and nothing else.
        patches: dict[str, list[pulumi.Resource]] = {}
        self.node_labels = {}
        for machine_name, (machine, _) in hosts.items():
            value = facts[machine_name].apply(lambda f: node_label_value(node_verified(f, s.cluster)))
            self.node_labels[s.node_name(machine_name)] = value
            patch = node_label_patch(s, s.node_name(machine_name), value)
            patch["metadata"]["annotations"] = {"pulumi.com/patchForce": "true"}
            resource = k8s.core.v1.NodePatch(
                f"{name}-{machine_name}-label", metadata=patch["metadata"], opts=opts_(ready[machine_name])
            )
            patches.setdefault(kube_arch(machine.arch), []).append(resource)

        rc = runtime_class(s)
        runtime = k8s.node.v1.RuntimeClass(
            f"{name}-runtime-class",
            metadata=rc["metadata"],
            handler=rc["handler"],
            overhead=rc.get("overhead"),
            scheduling=rc["scheduling"],
            opts=opts_(replace=True),
        )
        ns = namespace(s)
        sandbox_ns = k8s.core.v1.Namespace(f"{name}-namespace", metadata=ns["metadata"], opts=opts_())
        sa = workload_account(s)
        account = k8s.core.v1.ServiceAccount(
            f"{name}-workload-account",
            metadata=sa["metadata"],
            automount_service_account_token=False,
            opts=opts_([sandbox_ns]),
        )
        deny = default_deny(s)
        policy = k8s.networking.v1.NetworkPolicy(
            f"{name}-default-deny", metadata=deny["metadata"], spec=deny["spec"], opts=opts_([sandbox_ns])
        )

        jobs: dict[str, k8s.batch.v1.Job] = {}
        arches = sorted({m.arch for m, _ in hosts.values()} | set(s.node_installer.arches if s.node_installer else ()))
        for arch in arches:
            ka = kube_arch(arch)
            deps: list[pulumi.Resource] = [runtime, sandbox_ns, account, policy, *patches.get(ka, [])]
            if installer is not None:
                # Gone before the cleanup DaemonSet restores the nodes under them.
                deps += [installer.installer, installer.cleanup]
            pod = sample_pod(s, arch)
            k8s.core.v1.Pod(f"{name}-sample-{ka}", metadata=pod["metadata"], spec=pod["spec"], opts=opts_(deps, True))
            same_arch = [facts[n] for n, (m, _) in hosts.items() if m.arch == arch]
            fingerprint: pulumi.Input[str] = pulumi.Output.all(*same_arch).apply(runtime_fingerprint)
            if installer is not None:
                fingerprint = installer.fingerprint
            job = verify_job(s, arch, fingerprint)
            jobs[ka] = k8s.batch.v1.Job(
                f"{name}-verify-{ka}", metadata=job["metadata"], spec=job["spec"], opts=opts_(deps, True)
            )

        def results(statuses: dict[str, Any]) -> dict[str, Any]:
            return {
                ka: {"job": f"{s.namespace}/{verify_job(s, arch)['metadata']['name']}", **job_result(statuses[ka])}
                for arch in arches
                for ka in [kube_arch(arch)]
            }

        self.verification = pulumi.Output.all(**{ka: job.status for ka, job in jobs.items()}).apply(results)
        self.runtime_class_name = runtime.metadata.apply(lambda m: m.name or s.runtime_class_name)
        self.register_outputs(
            {
                "verification": self.verification,
                "runtimeClassName": self.runtime_class_name,
                "nodeLabels": self.node_labels,
            }
        )
