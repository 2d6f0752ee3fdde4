"""The policy rules as pure functions over plain resource data.

Nothing here imports Pulumi or pulumi_policy: each rule takes `Resource`
records (URN, type, name, properties as plain dicts, parent URN) and a
`PolicyConfig`, and returns `Violation`s. `__main__.py` turns what the engine
sends into these records; tests build them by hand or from the program run
under Pulumi mocks.

What the rules read:

- the host steps' command lines (`command:remote:Command` `create`), which
  the program builds as `[sudo -n] sh .gvisor-fleet/<file> -t<timeout>
  [-i<instance>] <subcommand> <args...>` (the GvisorHost steps, see agent_run;
  the install step's is `preflight <4 args> install ...`, read as its install)
  or `[sudo -n] sh -s -- <subcommand> <args...>` (the k3s steps):
  `install <baseUrl> <release> <installDir> <sha512|->`,
  `install-file <copy> <sha512> <release> <installDir>` (a copied release),
  `docker-configure <runtimeName> <defaultRuntime true|false> <installDir> --flags...`,
  `containerd-configure <runtimeName> <b64 runsc.toml> <installDir> <runscConfigPath>`,
  and k3s nodes' `runtime-configure <runtimeName> <shim> <b64 runsc.toml> <path>`;
- Kubernetes objects: RuntimeClass (`handler`), Namespace (labels), and
  every kind that carries a pod spec (Pod, Deployment, Job, CronJob, ...);
- the node installer's ConfigMap (components/kube/node_installer.py): its
  `steps-<arch>` files hold the same agent lines, without `sh <file>`, run
  on every node of the cluster;
- the stack's name, from any URN (`urn:pulumi:<stack>::<project>::...`).

A value the engine does not know yet during a preview arrives as `UNKNOWN`;
a rule that needs it says it could not check instead of passing silently.
"""

from __future__ import annotations

import fnmatch
import re
import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

COMMAND_TYPE: Final = "command:remote:Command"
HOST_TYPE: Final = "gvisor-fleet:gvisor:GvisorHost"
RUNTIME_CLASS_TYPE: Final = "kubernetes:node.k8s.io/v1:RuntimeClass"
NAMESPACE_TYPE: Final = "kubernetes:core/v1:Namespace"

# The labels components/kube/manifests.py puts on what it makes.
APP_LABEL: Final = "app.kubernetes.io/name"
APP_NAME: Final = "gvisor-fleet"
COMPONENT_LABEL: Final = "app.kubernetes.io/component"
SANDBOX_NAMESPACE_COMPONENT: Final = "sandbox-namespace"
CONFIG_MAP_TYPE: Final = "kubernetes:core/v1:ConfigMap"
# The node installer (components/kube/node_installer.py): its namespace, and
# its two DaemonSets, the only privileged pods the program makes.
INSTALLER_NAMESPACE_COMPONENT: Final = "installer-namespace"
INSTALLER_COMPONENTS: Final = ("node-installer", "node-cleanup")
INSTALLER_MACHINE: Final = "the node installer's nodes"

# Defaults of the product (components/kube/settings.py), used when the stack
# itself declares no RuntimeClass or sandbox Namespace.
DEFAULT_RUNTIME_CLASS: Final = "gvisor"
DEFAULT_SANDBOX_NAMESPACE: Final = "gvisor-sandbox"

# Component output (GvisorHost.register_outputs) by which a machine says it
# builds container images; see docs/ci-and-policy.md, "Image-build hosts".
BUILDS_IMAGES_OUTPUT: Final = "buildsImages"

DATED_RELEASE = re.compile(r"^\d{8}(\.\d+)?$")

# Where a pod spec sits, per kind (apiVersion-independent).
POD_SPEC_PATHS: Final[Mapping[str, tuple[str, ...]]] = {
    "Pod": ("spec",),
    "PodTemplate": ("template", "spec"),
    "ReplicationController": ("spec", "template", "spec"),
    "ReplicaSet": ("spec", "template", "spec"),
    "Deployment": ("spec", "template", "spec"),
    "StatefulSet": ("spec", "template", "spec"),
    "DaemonSet": ("spec", "template", "spec"),
    "Job": ("spec", "template", "spec"),
    "CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
}
_K8S_TYPE = re.compile(
    r"^kubernetes:(?P<group>[a-z0-9.]+)/(?P<version>v[a-z0-9]+):(?P<kind>[A-Za-z]+?)(?P<patch>Patch)?$"
)


class _Unknown:
    """A value the engine cannot know during a preview."""

    _instance: _Unknown | None = None

    def __new__(cls) -> _Unknown:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNKNOWN"


UNKNOWN: Final = _Unknown()


@dataclass(frozen=True)
class Resource:
    """One resource as a policy sees it; `props` holds plain Python data."""

    urn: str
    type: str
    name: str
    props: Mapping[str, Any]
    parent: str | None = None


@dataclass(frozen=True)
class Violation:
    """A broken rule; with `unknown`, a rule that could not be checked because a value is not known yet.

    The pack reports unknowns as advisory (the check runs again once the
    value is known), as pulumi_policy does for unknown values itself.
    """

    message: str
    urn: str | None = None
    unknown: bool = False


@dataclass(frozen=True)
class PolicyConfig:
    """The pack's settings (`--policy-pack-config`, see docs/ci-and-policy.md)."""

    # Stacks (fnmatch patterns) on which an unpinned gVisor release is allowed.
    dev_stacks: tuple[str, ...] = ("dev", "dev-*", "*-dev")
    # Machines (fnmatch patterns) that build container images.
    image_builders: tuple[str, ...] = ()
    # Namespaces whose workloads must run under gVisor, on top of the
    # sandbox Namespaces the stack itself creates.
    sandbox_namespaces: tuple[str, ...] = (DEFAULT_SANDBOX_NAMESPACE,)
    # RuntimeClass names that count as gVisor, on top of those the stack creates.
    runtime_class_names: tuple[str, ...] = ()


class ConfigError(ValueError):
    pass


def _patterns(raw: Mapping[str, Any], key: str, default: tuple[str, ...]) -> tuple[str, ...]:
    value = raw.get(key)
    if value is None:
        return default
    if isinstance(value, str) or not isinstance(value, Sequence) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"policy config '{key}' must be a list of strings, got {value!r}")
    return tuple(value)


CONFIG_KEYS: Final = ("devStacks", "imageBuilders", "sandboxNamespaces", "runtimeClassNames")


def parse_config(raw: Mapping[str, Any] | None, allowed: Iterable[str] = CONFIG_KEYS) -> PolicyConfig:
    """PolicyConfig from one policy's config object (camelCase keys, all optional).

    A key the policy does not read is an error, so a typo in the config file
    cannot switch a check off unnoticed.
    """
    raw = raw or {}
    allowed = tuple(allowed)
    unknown = sorted(str(k) for k in raw if k not in allowed and k != "enforcementLevel")
    if unknown:
        known = ", ".join(allowed) or "none"
        raise ConfigError(f"policy config: unknown key(s) {', '.join(unknown)}; this policy reads: {known}")
    d = PolicyConfig()
    return PolicyConfig(
        dev_stacks=_patterns(raw, "devStacks", d.dev_stacks),
        image_builders=_patterns(raw, "imageBuilders", d.image_builders),
        sandbox_namespaces=_patterns(raw, "sandboxNamespaces", d.sandbox_namespaces),
        runtime_class_names=_patterns(raw, "runtimeClassNames", d.runtime_class_names),
    )


# --- reading what the program declared ----------------------------------------


def stack_of(urn: str) -> str:
    """The stack name in `urn:pulumi:<stack>::<project>::<type>::<name>`."""
    if not urn.startswith("urn:pulumi:"):
        raise ValueError(f"not a Pulumi URN: {urn!r}")
    return urn[len("urn:pulumi:") :].split("::", 1)[0]


def name_of(urn: str) -> str:
    """The resource name, the URN's last `::` part."""
    return urn.rsplit("::", 1)[-1]


def type_of(urn: str) -> str:
    """The resource's own type in a URN whose type part may be qualified by its parents' (`A$B$type`)."""
    parts = urn.split("::")
    return parts[2].rsplit("$", 1)[-1] if len(parts) >= 4 else ""


def matches(name: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def get_path(props: Any, path: Sequence[str]) -> Any:
    """props[path[0]][path[1]]...; None where a key is missing, UNKNOWN where a value is unknown."""
    value = props
    for key in path:
        if value is UNKNOWN:
            return UNKNOWN
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


@dataclass(frozen=True)
class AgentCall:
    """A host agent command line split up: its subcommand and arguments."""

    subcommand: str
    args: tuple[str, ...]
    requested: str = ""  # the release the stack asked for, when the line installs what it resolved to (-r)

    def arg(self, index: int) -> str | None:
        return self.args[index] if index < len(self.args) else None


def agent_call(create: object) -> AgentCall | None:
    """The agent subcommand and its arguments, or None for any other command line."""
    if not isinstance(create, str):
        return None
    requested = ""
    try:
        words = shlex.split(create)
    except ValueError:
        return None
    if words[:2] == ["sudo", "-n"]:
        words = words[2:]
    # The copied script: its options (-t, -i), then the agent's own words.
    if words[:1] == ["sh"] and words[1:2] and words[1].startswith(".gvisor-fleet/"):
        options = 2
        while words[options : options + 1] and words[options].startswith(("-t", "-i", "-r")):
            if words[options].startswith("-r"):
                requested = words[options][2:]
            options += 1
        words = ["sh", "-s", "--", *words[options:]]
    if words[:3] != ["sh", "-s", "--"] or len(words) < 4:
        return None
    # Checks that run first (the install step): what follows them is the step's call.
    if words[3] == "preflight" and len(words) > 8:
        return AgentCall(words[8], tuple(words[9:]), requested)
    return AgentCall(words[3], tuple(words[4:]), requested)


@dataclass(frozen=True)
class HostStep:
    """One host step of one machine, with the machine it runs on."""

    resource: Resource
    machine: str
    call: AgentCall


def machine_of(resource: Resource, step: str) -> str:
    """The machine a host step runs on.

    GvisorHost steps are `<machine>-<step>` under a GvisorHost named after the
    machine; k3s steps are `<cluster>-<machine>-<step>` under the K3sCluster.
    """
    if resource.parent and type_of(resource.parent) == HOST_TYPE:
        return name_of(resource.parent)
    name = resource.name
    if resource.parent:
        prefix = f"{name_of(resource.parent)}-"
        name = name.removeprefix(prefix)
    return name.removesuffix(f"-{step}")


def host_steps(resources: Iterable[Resource], subcommands: Iterable[str]) -> list[HostStep]:
    wanted = set(subcommands)
    steps = []
    for r in resources:
        if r.type != COMMAND_TYPE:
            continue
        call = agent_call(r.props.get("create"))
        if call and call.subcommand in wanted:
            step = call.subcommand.removesuffix("-configure")
            steps.append(HostStep(r, machine_of(r, step), call))
    return steps


def installer_steps(resource: Resource) -> list[AgentCall]:
    """The agent calls in the node installer's ConfigMap (steps-<arch>), each as the SSH path's."""
    if resource.type != CONFIG_MAP_TYPE or _labels(resource.props).get(COMPONENT_LABEL) != "node-installer":
        return []
    data = resource.props.get("data")
    if not isinstance(data, Mapping):
        return []
    calls = []
    for key in sorted(data):
        if str(key).startswith("steps-") and isinstance(data[key], str):
            for line in data[key].splitlines():
                call = agent_call(f"sh -s -- {line}")
                if call:
                    calls.append(call)
    return calls


def k8s_kind(resource_type: str) -> tuple[str, bool] | None:
    """(kind, is_patch) for a Kubernetes resource type token, else None."""
    m = _K8S_TYPE.match(resource_type)
    return (m.group("kind"), bool(m.group("patch"))) if m else None


def _labels(props: Mapping[str, Any]) -> Mapping[str, Any]:
    value = get_path(props, ("metadata", "labels"))
    return value if isinstance(value, Mapping) else {}


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


# --- the rules ----------------------------------------------------------------


def release_pinned(resource: Resource, config: PolicyConfig) -> list[Violation]:
    """The install step pins a dated gVisor release, except on dev stacks.

    `latest` (and the nightly channel) changes under a stack without any
    change to the stack: a preview then shows no diff for what `up` would
    install, and two hosts installed a day apart may differ.
    """
    if resource.type == CONFIG_MAP_TYPE:
        installs = [c for c in installer_steps(resource) if c.subcommand == "install"]
        return [v for call in installs[:1] for v in _release_violations(resource, call, INSTALLER_MACHINE, config)]
    if resource.type != COMMAND_TYPE:
        return []
    call = agent_call(resource.props.get("create"))
    if call is None or call.subcommand not in ("install", "install-file"):
        return []
    return _release_violations(resource, call, machine_of(resource, "install"), config)


def _release_violations(resource: Resource, call: AgentCall, machine: str, config: PolicyConfig) -> list[Violation]:
    stack = stack_of(resource.urn)
    if matches(stack, config.dev_stacks):
        return []
    if call.subcommand == "install":
        base_url, release = call.arg(0) or "", call.arg(1) or ""
    else:  # a copied release (releaseFetch once): <copy> <sha512> <release> <installDir>
        base_url, release = "", call.arg(2) or ""
    if "/nightly" in base_url:
        return [
            Violation(
                f"machine '{machine}' installs gVisor from the nightly channel ({base_url}) on stack '{stack}'; "
                "use the release bucket and a dated release",
                resource.urn,
            )
        ]
    # `latest`, resolved when the program ran: the line names a dated release, `-rlatest` says it floats.
    release = call.requested or release
    if DATED_RELEASE.match(release):
        return []
    return [
        Violation(
            f"machine '{machine}' installs gVisor release '{release}' on stack '{stack}'; pin a dated release "
            "(gvisor-fleet:release, e.g. 20261116.0), or list the stack in this policy's devStacks",
            resource.urn,
        )
    ]


def image_builders(resources: Sequence[Resource], config: PolicyConfig) -> set[str]:
    """Machines that build images: named in the config, or whose GvisorHost says `buildsImages: true`."""
    builders = set()
    for r in resources:
        if r.type == HOST_TYPE and r.props.get(BUILDS_IMAGES_OUTPUT) is True:
            builders.add(r.name)
    for step in host_steps(resources, ("docker-configure",)):
        if matches(step.machine, config.image_builders):
            builders.add(step.machine)
    return builders


def no_default_runtime_on_image_builders(resources: Sequence[Resource], config: PolicyConfig) -> list[Violation]:
    """Docker's `default-runtime` is never runsc on a machine that builds images.

    With runsc as the default, BuildKit `RUN` steps are still not sandboxed,
    Docker's embedded DNS on user-defined networks (Compose) is unreachable
    from gVisor's netstack, and image builds that need the host kernel break.
    """
    builders = image_builders(resources, config)
    violations = []
    for step in host_steps(resources, ("docker-configure",)):
        default_runtime = step.call.arg(1)
        if default_runtime == "true" and step.machine in builders:
            violations.append(
                Violation(
                    f"machine '{step.machine}' builds images but would get runsc as Docker's default-runtime; "
                    "set gvisor-fleet:defaultRuntime to false (run sandboxed containers with --runtime="
                    f"{step.call.arg(0)}), or move the image builds to a machine without gVisor as default",
                    step.resource.urn,
                )
            )
        elif default_runtime not in ("true", "false"):
            violations.append(
                Violation(
                    f"cannot read default-runtime from the docker step of machine '{step.machine}' "
                    f"(got {default_runtime!r}); expected docker-configure <runtimeName> <true|false> ...",
                    step.resource.urn,
                )
            )
    return violations


def host_runtime_names(resources: Sequence[Resource]) -> dict[str, dict[str, str]]:
    """{machine: {"docker"|"containerd"|"k3s": runtime name}} from the host steps."""
    names: dict[str, dict[str, str]] = {}
    kinds = {"docker-configure": "docker", "containerd-configure": "containerd", "runtime-configure": "k3s"}
    for step in host_steps(resources, kinds):
        name = step.call.arg(0)
        if name:
            names.setdefault(step.machine, {})[kinds[step.call.subcommand]] = name
    for r in resources:
        for call in installer_steps(r):
            if call.subcommand == "containerd-configure" and call.arg(0):
                names.setdefault(INSTALLER_MACHINE, {})["containerd"] = str(call.arg(0))
    return names


def gvisor_runtime_classes(resources: Sequence[Resource], config: PolicyConfig) -> list[Resource]:
    """The stack's RuntimeClasses that stand for gVisor: made by gvisor-fleet, or named in the config."""
    found = []
    for r in resources:
        if r.type != RUNTIME_CLASS_TYPE:
            continue
        name = _text(get_path(r.props, ("metadata", "name")))
        if _labels(r.props).get(APP_LABEL) == APP_NAME or (name and name in config.runtime_class_names):
            found.append(r)
    return found


def runtime_names_match_handler(resources: Sequence[Resource], config: PolicyConfig) -> list[Violation]:
    """Docker's runtime name, containerd's runtime table and the RuntimeClass handler are one name.

    A RuntimeClass whose handler names no containerd runtime leaves every pod
    that uses it failing with `no runtime for "<handler>" is configured`.
    """
    violations: list[Violation] = []
    per_machine = host_runtime_names(resources)
    for machine, names in sorted(per_machine.items()):
        if len(set(names.values())) > 1:
            listed = ", ".join(f"{k} '{v}'" for k, v in sorted(names.items()))
            violations.append(
                Violation(f"machine '{machine}' registers gVisor under different runtime names: {listed}")
            )
    node_runtimes = {m: names.get("k3s", names.get("containerd")) for m, names in per_machine.items()}
    for rc in gvisor_runtime_classes(resources, config):
        rc_name = get_path(rc.props, ("metadata", "name"))
        handler = rc.props.get("handler")
        if handler is UNKNOWN:
            violations.append(Violation(f"RuntimeClass '{rc_name}': handler", rc.urn, unknown=True))
            continue
        for machine, runtime in sorted(node_runtimes.items()):
            if runtime is None:
                violations.append(
                    Violation(
                        f"RuntimeClass '{rc_name}' (handler '{handler}') has no containerd runtime on machine "
                        f"'{machine}': its containerd step is off; set gvisor-fleet:containerd to auto or required",
                        rc.urn,
                    )
                )
            elif runtime != handler:
                violations.append(
                    Violation(
                        f"RuntimeClass '{rc_name}' has handler '{handler}', but machine '{machine}' registers "
                        f"gVisor in containerd as '{runtime}'; the handler must be gvisor-fleet:runtimeName",
                        rc.urn,
                    )
                )
    return violations


def sandbox_namespaces(resources: Sequence[Resource], config: PolicyConfig) -> set[str]:
    names = set(config.sandbox_namespaces)
    for r in resources:
        if r.type != NAMESPACE_TYPE:
            continue
        labels = _labels(r.props)
        name = _text(get_path(r.props, ("metadata", "name")))
        if name and labels.get(APP_LABEL) == APP_NAME and labels.get(COMPONENT_LABEL) == SANDBOX_NAMESPACE_COMPONENT:
            names.add(name)
    return names


def runtime_class_names(resources: Sequence[Resource], config: PolicyConfig) -> set[str]:
    names = set(config.runtime_class_names)
    for rc in gvisor_runtime_classes(resources, config):
        name = _text(get_path(rc.props, ("metadata", "name")))
        if name:
            names.add(name)
    return names or {DEFAULT_RUNTIME_CLASS}


def sandbox_workloads_use_gvisor(resources: Sequence[Resource], config: PolicyConfig) -> list[Violation]:
    """Every Pod, and every workload's pod template, in a sandbox namespace sets a gVisor RuntimeClass.

    The sandbox namespace is where untrusted code is meant to run; a pod
    there without `runtimeClassName` runs on the node's default runtime,
    straight on the host kernel.
    """
    namespaces = sandbox_namespaces(resources, config)
    classes = runtime_class_names(resources, config)
    wanted = " or ".join(f"'{c}'" for c in sorted(classes))
    violations = []
    for r in resources:
        kind_patch = k8s_kind(r.type)
        if kind_patch is None or kind_patch[0] not in POD_SPEC_PATHS:
            continue
        kind, is_patch = kind_patch
        namespace = get_path(r.props, ("metadata", "namespace"))
        name = get_path(r.props, ("metadata", "name"))
        what = f"{kind} '{namespace}/{name}'"
        path = POD_SPEC_PATHS[kind]
        runtime_class = get_path(r.props, (*path, "runtimeClassName"))
        if runtime_class in classes or (runtime_class is None and is_patch):
            continue  # sandboxed wherever it runs; or a patch that leaves runtimeClassName alone
        if namespace is UNKNOWN:
            violations.append(Violation(f"{kind} '{name}': metadata.namespace", r.urn, unknown=True))
            continue
        if namespace not in namespaces:
            continue
        if runtime_class is UNKNOWN:
            violations.append(Violation(f"{what}: {'.'.join((*path, 'runtimeClassName'))}", r.urn, unknown=True))
        else:
            field_path = ".".join((*path, "runtimeClassName"))
            got = "is not set" if runtime_class is None else f"is '{runtime_class}'"
            violations.append(
                Violation(
                    f"{what} is in sandbox namespace '{namespace}' but {field_path} {got}; set it to {wanted} "
                    "so the pod runs under gVisor, not on the host kernel",
                    r.urn,
                )
            )
    return violations


HOST_ACCESS: Final = ("hostPID", "hostNetwork", "hostIPC")


def _privileges(spec: Any) -> list[str]:
    """What in a pod spec reaches into the node: privileged containers, host namespaces, hostPath volumes."""
    if not isinstance(spec, Mapping):
        return []
    found = [f"{key}: true" for key in HOST_ACCESS if spec.get(key) is True]
    for group in ("initContainers", "containers", "ephemeralContainers"):
        for c in spec.get(group) or []:
            if isinstance(c, Mapping) and get_path(c, ("securityContext", "privileged")) is True:
                found.append(f"container '{c.get('name')}' privileged")
    for v in spec.get("volumes") or []:
        if isinstance(v, Mapping) and v.get("hostPath") is not None:
            found.append(f"hostPath volume '{v.get('name')}'")
    return found


def installer_namespaces(resources: Sequence[Resource]) -> set[str]:
    """The namespaces the stack makes for the node installer."""
    names = set()
    for r in resources:
        labels = _labels(r.props)
        name = _text(get_path(r.props, ("metadata", "name")))
        ours = labels.get(APP_LABEL) == APP_NAME and labels.get(COMPONENT_LABEL) == INSTALLER_NAMESPACE_COMPONENT
        if r.type == NAMESPACE_TYPE and name and ours:
            names.add(name)
    return names


def is_node_installer(resource: Resource, namespaces: set[str]) -> bool:
    """One of the node installer's DaemonSets, in the installer namespace the stack makes."""
    labels = _labels(resource.props)
    return (
        k8s_kind(resource.type) == ("DaemonSet", False)
        and labels.get(APP_LABEL) == APP_NAME
        and labels.get(COMPONENT_LABEL) in INSTALLER_COMPONENTS
        and get_path(resource.props, ("metadata", "namespace")) in namespaces
    )


def privileged_pods_only_for_the_node_installer(resources: Sequence[Resource], config: PolicyConfig) -> list[Violation]:
    """No pod reaches into its node (privileged, host namespaces, hostPath), but the node installer's.

    The installer's pods must: they install gVisor on the node. Anything else
    so privileged would be a way around the sandbox the stack sets up.
    """
    namespaces = installer_namespaces(resources)
    violations = []
    for r in resources:
        kind_patch = k8s_kind(r.type)
        if kind_patch is None or kind_patch[0] not in POD_SPEC_PATHS or is_node_installer(r, namespaces):
            continue
        kind = kind_patch[0]
        spec = get_path(r.props, POD_SPEC_PATHS[kind])
        if spec is UNKNOWN:
            violations.append(Violation(f"{kind} '{r.name}': {'.'.join(POD_SPEC_PATHS[kind])}", r.urn, unknown=True))
            continue
        found = _privileges(spec)
        if found:
            what = f"{kind} '{get_path(r.props, ('metadata', 'namespace'))}/{get_path(r.props, ('metadata', 'name'))}'"
            violations.append(
                Violation(
                    f"{what} reaches into its node ({', '.join(found)}); only the gVisor node installer's "
                    "DaemonSets may: drop the privileges, or run it somewhere this stack does not manage",
                    r.urn,
                )
            )
    return violations


@dataclass(frozen=True)
class RuleInfo:
    name: str
    description: str
    enforcement: str = "mandatory"
    config_keys: tuple[str, ...] = field(default_factory=tuple)


RULES: Final = (
    RuleInfo(
        "gvisor-release-pinned",
        "The gVisor release is a dated release (not 'latest' or nightly) on every stack but dev stacks.",
        config_keys=("devStacks",),
    ),
    RuleInfo(
        "no-default-runtime-on-image-builders",
        "Docker's default-runtime is never runsc on a machine that builds images.",
        config_keys=("imageBuilders",),
    ),
    RuleInfo(
        "runtime-names-match-handler",
        "Docker's runtime name, containerd's runtime table and the gVisor RuntimeClass handler are the same name.",
        config_keys=("runtimeClassNames",),
    ),
    RuleInfo(
        "sandbox-workloads-use-gvisor",
        "Every Pod and workload in a sandbox namespace sets a gVisor RuntimeClass.",
        config_keys=("sandboxNamespaces", "runtimeClassNames"),
    ),
    RuleInfo(
        "privileged-pods-only-for-the-node-installer",
        "No pod is privileged, shares the node's namespaces or mounts its paths, but the gVisor node installer's.",
    ),
)
