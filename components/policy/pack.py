"""The CrossGuard side: pulumi_policy Policy objects wired to the pure rules.

`policies()` is what `__main__.py` hands to `PolicyPack`; tests call the
same objects with pulumi_policy's own argument types. The adapters here turn
what the engine sends (pulumi_policy's proxies, which raise on unknown
values) into plain data with `rules.UNKNOWN` in place of each unknown value,
so one unknown field does not stop a whole rule.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pulumi_policy import (
    EnforcementLevel,
    Policy,
    PolicyConfigSchema,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)
from pulumi_policy.proxy import (
    UNKNOWN_ARCHIVE_VALUE,
    UNKNOWN_ARRAY_VALUE,
    UNKNOWN_ASSET_VALUE,
    UNKNOWN_BOOLEAN_VALUE,
    UNKNOWN_NUMBER_VALUE,
    UNKNOWN_OBJECT_VALUE,
    UNKNOWN_STRING_VALUE,
    UnknownValueError,
)

from components.policy import rules

PACK_NAME = "gvisor-fleet"

_UNKNOWNS = frozenset(
    (
        UNKNOWN_ARCHIVE_VALUE,
        UNKNOWN_ARRAY_VALUE,
        UNKNOWN_ASSET_VALUE,
        UNKNOWN_BOOLEAN_VALUE,
        UNKNOWN_NUMBER_VALUE,
        UNKNOWN_OBJECT_VALUE,
        UNKNOWN_STRING_VALUE,
    )
)


def _raw(value: Any) -> Any:
    """The object behind one of pulumi_policy's proxies (they answer `["__target"]`), else the value."""
    if isinstance(value, Mapping | Sequence) and not isinstance(value, str):
        proxy: Any = value
        try:
            return proxy["__target"]
        except (KeyError, TypeError, IndexError):
            return value
    return value


def plain(value: Any) -> Any:
    """Plain dicts, lists and scalars, with rules.UNKNOWN for every value unknown during a preview."""
    value = _raw(value)
    if isinstance(value, str):
        return rules.UNKNOWN if value in _UNKNOWNS else value
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, Sequence):
        return [plain(v) for v in value]
    return value


def _props(props: Any) -> dict[str, Any]:
    result = plain(props)
    return result if isinstance(result, dict) else {}


def _report(violations: Sequence[rules.Violation], report_violation: ReportViolation) -> None:
    """Reports each broken rule; then, if a value was unknown, says so the way pulumi_policy does.

    pulumi_policy turns UnknownValueError into an advisory "can't run policy
    ... during preview" diagnostic; the violations reported before it stand.
    """
    for v in violations:
        if not v.unknown:
            report_violation(v.message, v.urn)
    unknown = [v for v in violations if v.unknown]
    if unknown:
        error = UnknownValueError(UNKNOWN_STRING_VALUE, [])
        error.message = "; ".join(f"{v.message} is not known yet" for v in unknown)
        raise error


def _config(args: ResourceValidationArgs | StackValidationArgs, info: rules.RuleInfo) -> rules.PolicyConfig:
    try:
        return rules.parse_config(plain(args.get_config()), info.config_keys)
    except rules.ConfigError as err:
        raise rules.ConfigError(f"{info.name}: {err}") from None


_STRING_LIST = {"type": "array", "items": {"type": "string"}}
_CONFIG_PROPERTIES: dict[str, dict[str, Any]] = {
    "devStacks": {
        **_STRING_LIST,
        "default": list(rules.PolicyConfig().dev_stacks),
        "description": "Stacks (fnmatch patterns) that may install an unpinned gVisor release.",
    },
    "imageBuilders": {
        **_STRING_LIST,
        "default": [],
        "description": "Machines (fnmatch patterns) that build container images.",
    },
    "sandboxNamespaces": {
        **_STRING_LIST,
        "default": list(rules.PolicyConfig().sandbox_namespaces),
        "description": "Namespaces whose workloads must use gVisor, besides the stack's own sandbox Namespace.",
    },
    "runtimeClassNames": {
        **_STRING_LIST,
        "default": [],
        "description": "RuntimeClass names that count as gVisor, besides the stack's own gVisor RuntimeClass.",
    },
}


def _schema(info: rules.RuleInfo) -> PolicyConfigSchema | None:
    if not info.config_keys:
        return None
    return PolicyConfigSchema(properties={k: _CONFIG_PROPERTIES[k] for k in info.config_keys})


def _resource_policy(
    info: rules.RuleInfo, rule: Callable[[rules.Resource, rules.PolicyConfig], list[rules.Violation]]
) -> ResourceValidationPolicy:
    def validate(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
        resource = rules.Resource(
            urn=args.urn,
            type=args.resource_type,
            name=args.name,
            props=_props(args.props),
            parent=args.opts.parent if args.opts else None,
        )
        _report(rule(resource, _config(args, info)), report_violation)

    return ResourceValidationPolicy(
        name=info.name,
        description=info.description,
        validate=validate,
        enforcement_level=EnforcementLevel(info.enforcement),
        config_schema=_schema(info),
    )


def _stack_policy(
    info: rules.RuleInfo, rule: Callable[[Sequence[rules.Resource], rules.PolicyConfig], list[rules.Violation]]
) -> StackValidationPolicy:
    def validate(args: StackValidationArgs, report_violation: ReportViolation) -> None:
        resources = [
            rules.Resource(
                urn=r.urn,
                type=r.resource_type,
                name=r.name,
                props=_props(r.props),
                parent=r.parent.urn if r.parent else (r.opts.parent if r.opts else None),
            )
            for r in args.resources
        ]
        _report(rule(resources, _config(args, info)), report_violation)

    return StackValidationPolicy(
        name=info.name,
        description=info.description,
        validate=validate,
        enforcement_level=EnforcementLevel(info.enforcement),
        config_schema=_schema(info),
    )


def policies() -> list[Policy]:
    by_name = {info.name: info for info in rules.RULES}
    return [
        _resource_policy(by_name["gvisor-release-pinned"], rules.release_pinned),
        _stack_policy(by_name["no-default-runtime-on-image-builders"], rules.no_default_runtime_on_image_builders),
        _stack_policy(by_name["runtime-names-match-handler"], rules.runtime_names_match_handler),
        _stack_policy(by_name["sandbox-workloads-use-gvisor"], rules.sandbox_workloads_use_gvisor),
        _stack_policy(
            by_name["privileged-pods-only-for-the-node-installer"], rules.privileged_pods_only_for_the_node_installer
        ),
    ]
