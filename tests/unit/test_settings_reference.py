"""docs/configuration.md and Pulumi.yaml cannot drift from the settings the code reads."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import yaml

from components.fleet.specs import AwsOptions, MultipassOptions, QemuOptions
from components.gvisor.settings import GvisorSettings
from components.kube.settings import K3sSettings, KubeSettings, parse_kube_settings
from components.overhead.settings import OverheadSettings, parse_overhead_settings
from components.schema import Setting, walk
from components.settings import KNOWN_KEYS, TOP_LEVEL, SettingsError, load_settings
from components.settings_reference import default_text, markdown, pulumi_config, pulumi_yaml

ROOT = Path(__file__).parents[2]
REFERENCE = ROOT / "docs" / "configuration.md"
PROJECT = ROOT / "Pulumi.yaml"
ROW = re.compile(
    r"^\| `(?P<key>[^`]+)` \| (?P<type>[^|]+) \| (?P<default>(?:[^|\\]|\\.)*) \| .* \| (?P<backends>[^|]+) \| .*\|$"
)
REGENERATE = "regenerate: python -m components.settings_reference > docs/configuration.md"


def reference_rows() -> list[dict[str, str]]:
    rows = [m.groupdict() for line in REFERENCE.read_text().splitlines() if (m := ROW.match(line))]
    assert rows, "no key rows found in docs/configuration.md"
    return rows


def declared() -> list[tuple[str, Setting]]:
    return list(walk(TOP_LEVEL))


def test_the_committed_reference_is_what_the_declarations_give():
    assert REFERENCE.read_text() == markdown(), REGENERATE


def test_the_committed_pulumi_yaml_is_what_the_declarations_give():
    assert PROJECT.read_text() == pulumi_yaml(), "regenerate: python -m components.settings_reference --pulumi-yaml"


def test_the_reference_names_every_key_the_code_declares_and_no_other():
    in_reference = sorted((r["key"], r["backends"].strip()) for r in reference_rows())
    in_code = sorted((path, "all" if len(s.backends) == 4 else ", ".join(s.backends)) for path, s in declared())
    assert in_reference == in_code


def _probe(path: str, backends: str) -> dict[str, object]:
    """A raw config that sets exactly the key at `path` (to None: present, no value to check)."""
    parts = path.replace("[]", "").split(".")
    if parts[0] == "machines" and len(parts) > 1:
        backend = "static" if backends == "all" else backends.split(", ")[0]
        return {"machines": [{"backend": backend, parts[1]: None}]}
    value: dict[str, object] = {parts[-1]: None}
    for part in reversed(parts[:-1]):
        value = {part: value}
    return value


def _unknown(raw: dict[str, object]) -> list[str]:
    try:
        load_settings(raw, has_private_key=True)
    except SettingsError as err:
        return [p for p in err.problems if "is not a setting of" in p]
    return []


def test_the_code_accepts_every_key_the_reference_names():
    """Load each key through the real parser: none is refused as unknown."""
    for row in reference_rows():
        assert _unknown(_probe(row["key"], row["backends"].strip())) == [], row["key"]


@pytest.mark.parametrize(
    "raw",
    [{"bogus": None}, {"kubernetes": {"bogus": None}}, {"kubernetes": {"k3s": {"bogus": None}}},
     {"overhead": {"bogus": None}}, {"machines": [{"name": "m", "bogus": None}]}],
)  # fmt: skip
def test_the_code_refuses_a_key_the_reference_does_not_name(raw):
    assert len(_unknown(raw)) == 1


def test_pulumi_yaml_names_only_keys_the_code_accepts_with_the_same_defaults():
    project = yaml.safe_load(PROJECT.read_text())["config"]
    assert set(project) <= set(KNOWN_KEYS)
    by_name = {s.name: s for s in TOP_LEVEL}
    reference = {r["key"]: r["default"].strip().strip("`") for r in reference_rows()}
    for name, entry in project.items():
        assert entry["default"] == by_name[name].default, name
        shown = entry["default"] if not isinstance(entry["default"], bool) else str(entry["default"]).lower()
        assert reference[name] == str(shown), name
    assert project == pulumi_config()
    # The keys Pulumi.yaml cannot declare (objects, secrets, no default) are named in its comment.
    comment = PROJECT.read_text().split("\nconfig:\n", 1)[1]
    for name in set(KNOWN_KEYS) - set(project):
        assert f"#   {name} (" in comment, name


def test_the_reference_shows_each_declared_default():
    rows = {(r["key"], r["backends"].strip()): r["default"].strip() for r in reference_rows()}
    for path, s in declared():
        backends = "all" if len(s.backends) == 4 else ", ".join(s.backends)
        assert rows[(path, backends)].strip("`").replace("&lt;", "<").replace("&gt;", ">") == default_text(s), path


def _snake(name: str) -> str:
    return {"memory": "memory_mb"}.get(name, re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), name))


def _check_defaults(instance: object, settings: tuple[Setting, ...], backend: str | None = None) -> int:
    """Each declared default equals the field of that name in `instance`; returns how many were compared."""
    fields = {f.name for f in dataclasses.fields(instance)}  # type: ignore[arg-type]
    compared = 0
    for s in settings:
        if s.default is None or s.doc_default is not None or _snake(s.name) not in fields:
            continue
        if backend and backend not in s.backends:
            continue
        assert getattr(instance, _snake(s.name)) == s.default, (type(instance).__name__, s.name)
        compared += 1
    return compared


def test_the_code_uses_the_declared_defaults():
    """The dataclasses' own defaults, and what parsing an empty object gives, are the declared defaults."""
    from components.fleet.specs import MACHINE_FIELDS
    from components.gvisor.settings import SETTINGS as GVISOR
    from components.kube.settings import FIELDS as KUBE
    from components.kube.settings import K3S
    from components.overhead.settings import FIELDS as OVERHEAD

    kube = parse_kube_settings(True, "runsc", [])
    assert kube is not None
    counts = [
        _check_defaults(GvisorSettings(), GVISOR),
        _check_defaults(load_settings({}, has_private_key=False).gvisor, GVISOR),
        _check_defaults(KubeSettings(handler="runsc"), KUBE),
        _check_defaults(kube, KUBE),
        _check_defaults(K3sSettings(), K3S),
        _check_defaults(kube.k3s, K3S),
        _check_defaults(OverheadSettings(), OVERHEAD),
        _check_defaults(parse_overhead_settings({}), OVERHEAD),
        _check_defaults(QemuOptions(image="/i", ssh_port=22000), MACHINE_FIELDS, "qemu"),
        _check_defaults(MultipassOptions(), MACHINE_FIELDS, "multipass"),
        _check_defaults(AwsOptions(allowed_cidr="10.0.0.0/8", instance_type="t3.small"), MACHINE_FIELDS, "aws"),
    ]
    assert all(counts), counts
