"""Every invalid setting fails with the config key named and a fix."""

import pulumi
import pytest
from pulumi.runtime.config import set_all_config

from components.config import read_raw_config
from components.fleet.keys import generate_ed25519
from components.gvisor.settings import DEFAULT_RELEASE
from components.settings import SettingsError, load_settings

MACHINE = {"name": "m1", "address": "127.0.0.1", "arch": "x86_64"}
HOST_KEY = generate_ed25519("m1").public_key


def problems(raw: dict, has_key: bool = True) -> list[str]:
    with pytest.raises(SettingsError) as err:
        load_settings(raw, has_private_key=has_key)
    return err.value.problems


def test_defaults_are_valid_and_pinned():
    s = load_settings({}, has_private_key=False)
    assert s.gvisor.release == DEFAULT_RELEASE != "latest"
    assert s.gvisor.platform == "systrap"
    assert s.gvisor.default_runtime is False
    assert s.gvisor.docker_network == s.gvisor.containerd_network == "sandbox"
    assert s.machines == ()


@pytest.mark.parametrize(
    ("raw", "key", "hint"),
    [
        ({"release": "release-20261116.0"}, "gvisor-fleet:release", "20261116.0"),
        ({"release": "2026-11-16"}, "gvisor-fleet:release", "YYYYMMDD"),
        ({"baseUrl": "storage.googleapis.com/gvisor"}, "gvisor-fleet:baseUrl", "http"),
        ({"platform": "ptrace"}, "gvisor-fleet:platform", "systrap"),
        ({"platform": "gvisor"}, "gvisor-fleet:platform", "systrap, kvm"),
        ({"dockerNetwork": "bridge"}, "gvisor-fleet:dockerNetwork", "sandbox, host, none"),
        ({"docker": "yes"}, "gvisor-fleet:docker", "auto, required, off"),
        ({"defaultRuntime": "yes"}, "gvisor-fleet:defaultRuntime", "true or false"),
        ({"defaultRuntime": True, "docker": "off"}, "gvisor-fleet:defaultRuntime", "gvisor-fleet:docker"),
        ({"runtimeName": "RunSC"}, "gvisor-fleet:runtimeName", "lower-case"),
        ({"installDir": "usr/local/bin"}, "gvisor-fleet:installDir", "absolute"),
        ({"runscFlags": {"vfs2": "true"}}, "gvisor-fleet:runscFlags", "no-op"),
        ({"runscFlags": {"fsgofer-host-uds": "true"}}, "gvisor-fleet:runscFlags", "host-uds"),
        ({"runscFlags": {"overlay": "true"}}, "gvisor-fleet:runscFlags", "overlay2"),
        ({"runscFlags": {"platform": "kvm"}}, "gvisor-fleet:runscFlags", "gvisor-fleet:platform"),
        ({"runscFlags": {"--debug": "true"}}, "gvisor-fleet:runscFlags", "without leading dashes"),
        ({"runscFlags": {"debug": ["x"]}}, "gvisor-fleet:runscFlags", "string, number or boolean"),
        ({"runscFlags": {"file-access": "shared"}}, "gvisor-fleet:runscFlags", 'overlay2 = "none"'),
        ({"runscFlags": ["debug"]}, "gvisor-fleet:runscFlags", "map"),
        ({"sha512": {"amd64": "a" * 128}}, "gvisor-fleet:sha512.amd64", "x86_64"),
        ({"sha512": {"x86_64": "abc"}}, "gvisor-fleet:sha512.x86_64", "128 hex"),
        ({"release": "latest", "sha512": {"x86_64": "a" * 128}}, "gvisor-fleet:sha512", "dated release"),
        ({"machines": [{**MACHINE, "arch": "arm64"}]}, "gvisor-fleet:machines[0].arch", "aarch64"),
        ({"machines": [{**MACHINE, "arch": "riscv64"}]}, "gvisor-fleet:machines[0].arch", "x86_64, aarch64"),
        ({"machines": [MACHINE, MACHINE]}, "gvisor-fleet:machines[1].name", "unique"),
        ({"machines": [{**MACHINE, "name": "Web_1"}]}, "gvisor-fleet:machines[0].name", "DNS label"),
        ({"machines": [{"name": "m1"}]}, "gvisor-fleet:machines[0].address", "SSH"),
        ({"machines": [{**MACHINE, "port": 70000}]}, "gvisor-fleet:machines[0].port", "port"),
        ({"machines": [{**MACHINE, "backend": "vagrant"}]}, "gvisor-fleet:machines[0].backend", "static"),
        ({"machines": [{**MACHINE, "hostKey": "AAAA"}]}, "gvisor-fleet:machines[0].hostKey", "ssh-keyscan"),
        ({"machines": {"m1": MACHINE}}, "gvisor-fleet:machines", "list"),
        ({"runscFlags": {"debug-log": "/var/log/a\nb"}}, "gvisor-fleet:runscFlags", "newline or a quote"),
        ({"runscFlags": {"debug-log": '/var/log/"x"'}}, "gvisor-fleet:runscFlags", "newline or a quote"),
        ({"runscFlags": {"debug-log": "/var/log/'x'"}}, "gvisor-fleet:runscFlags", "newline or a quote"),
        ({"installDir": "/"}, "gvisor-fleet:installDir", "'/' alone"),
        ({"installDir": "/opt/my bin"}, "gvisor-fleet:installDir", "space, quote"),
        ({"installDir": "/opt/'bin'"}, "gvisor-fleet:installDir", "space, quote"),
        ({"runscConfigPath": "/etc/containerd/run sc.toml"}, "gvisor-fleet:runscConfigPath", "space, quote"),
        ({"runscConfigPath": '/etc/"runsc".toml'}, "gvisor-fleet:runscConfigPath", "space, quote"),
        ({"runscConfigPath": "//"}, "gvisor-fleet:runscConfigPath", "'/' alone"),
        ({"runscConfigPath": "runsc.toml"}, "gvisor-fleet:runscConfigPath", "absolute"),
        ({"stepTimeout": "10"}, "gvisor-fleet:stepTimeout", "60 to 86400"),
        ({"stepTimeout": "15m"}, "gvisor-fleet:stepTimeout", "whole number of seconds"),
        ({"stepTimeout": True}, "gvisor-fleet:stepTimeout", "whole number of seconds"),
        ({"releaseFetch": "local"}, "gvisor-fleet:releaseFetch", "host, once"),
        ({"releaseDir": "/srv/releases"}, "gvisor-fleet:releaseDir", "gvisor-fleet:releaseFetch is once"),
        (
            {"releaseFetch": "once", "releaseDir": "releases"},
            "gvisor-fleet:releaseDir",
            "absolute path or start with ~",
        ),
        ({"releaseFetch": "once", "releaseDir": ""}, "gvisor-fleet:releaseDir", "directory path"),
        (
            {"releaseFetch": "once", "machines": [{**MACHINE, "arch": "detect"}]},
            "gvisor-fleet:machines[0].arch",
            "write x86_64 or aarch64",
        ),
        ({"relase": None}, "gvisor-fleet:relase", "did you mean 'release'?"),
        ({"runscFlag": None}, "gvisor-fleet:runscFlag", "did you mean 'runscFlags'?"),
        ({"zzz": None}, "gvisor-fleet:zzz", "Configuration reference"),
        ({"overhed": None}, "gvisor-fleet:overhed", "did you mean 'overhead'?"),
        ({"Kubernetes": None}, "gvisor-fleet:Kubernetes", "did you mean 'kubernetes'?"),
        ({"overhead": {"runs": 0}}, "gvisor-fleet:overhead.runs", "from 1 to 100"),
        ({"overhead": {"engine": "docker"}, "docker": "off"}, "gvisor-fleet:overhead.engine", "auto or the other"),
    ],
)
def test_invalid_setting_names_key_and_fix(raw, key, hint):
    found = problems(raw)
    assert len(found) == 1, found
    assert found[0].startswith(key + ":"), found[0]
    assert hint in found[0]


def test_missing_private_key_names_the_secret_and_machines():
    (found,) = problems({"machines": [MACHINE]}, has_key=False)
    assert found.startswith("gvisor-fleet:sshPrivateKey:")
    assert "m1" in found and "--secret" in found


def test_all_problems_reported_at_once():
    found = problems({"platform": "ptrace", "release": "x", "runscFlags": {"vfs2": "true", "overlay": "true"}})
    assert len(found) == 4
    assert "invalid stack configuration" in str(SettingsError(found))


def test_valid_full_config_round_trips():
    s = load_settings(
        {
            "release": "20261109.0",
            "baseUrl": "http://mirror.internal/gvisor/",
            "platform": "kvm",
            "containerdNetwork": "none",
            "runscFlags": {"debug": True, "debug-log": "/var/log/runsc/%ID%/", "host-uds": "open"},
            "defaultRuntime": True,
            "sha512": {"aarch64": "AB" * 64},
            "machines": [{**MACHINE, "user": "admin", "port": 2222, "hostKey": HOST_KEY}],
        },
        has_private_key=True,
    )
    assert s.gvisor.base_url == "http://mirror.internal/gvisor"
    assert s.gvisor.sha512 == {"aarch64": "ab" * 64}
    (m,) = s.machines
    assert (m.name, m.user, m.port, m.arch, m.host_key) == ("m1", "admin", 2222, "x86_64", HOST_KEY)


def test_default_runtime_is_refused_on_image_builders():
    builder = {**MACHINE, "buildsImages": True}
    (found,) = problems({"defaultRuntime": True, "machines": [MACHINE, builder | {"name": "m2"}]})
    assert found.startswith("gvisor-fleet:machines[1].buildsImages:")
    assert "defaultRuntime" in found and "'m2'" in found
    s = load_settings({"machines": [builder]}, has_private_key=True)
    assert s.machines[0].builds_images is True


def test_builds_images_must_be_a_boolean():
    (found,) = problems({"machines": [{**MACHINE, "buildsImages": "yes"}]})
    assert found == "gvisor-fleet:machines[0].buildsImages: must be true or false"


@pytest.mark.parametrize("value", ["60", 900, "86400"])
def test_step_timeout_accepts_whole_seconds_in_range(value):
    assert load_settings({"stepTimeout": value}, has_private_key=False).gvisor.step_timeout == int(value)


def test_step_timeout_defaults_to_fifteen_minutes():
    assert load_settings({}, has_private_key=False).gvisor.step_timeout == 900


def test_secret_keys_are_known_settings():
    load_settings({"sshPrivateKey": None, "kubeconfig": None}, has_private_key=False)


def test_keys_the_program_does_not_read_reach_the_check_without_their_values():
    set_all_config({"gvisor-fleet:relase": "20261109.0", "gvisor-fleet:sshPrivateKey": "k", "other:relase": "x"})
    try:
        raw = read_raw_config(pulumi.Config("gvisor-fleet"))
    finally:
        set_all_config({})
    assert raw == {"relase": None}
    (found,) = problems(raw)
    assert found.startswith("gvisor-fleet:relase:") and "'release'" in found


def test_release_fetch_defaults_to_each_host_and_once_takes_a_release_dir(monkeypatch):
    assert load_settings({}, has_private_key=False).gvisor.release_fetch == "host"
    monkeypatch.setenv("HOME", "/home/ops")
    g = load_settings({"releaseFetch": "once", "releaseDir": "~/releases"}, has_private_key=False).gvisor
    assert (g.release_fetch, g.release_dir) == ("once", "/home/ops/releases")
    # Static machines may detect their arch while each host downloads for itself.
    load_settings({"machines": [{**MACHINE, "arch": "detect"}]}, has_private_key=True)


@pytest.mark.parametrize(
    ("machine", "key", "words"),
    [
        ({"hostKey": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPlaceholderReplaceWithSshKeyscanOutput0000"},
         "hostKey", "does not decode"),
        ({"hostKey": "ssh-ed25519 " + HOST_KEY.split()[1][:-8]}, "hostKey", "does not decode"),
        ({"hostKey": "AAAAC3NzaC1lZDI1NTE5"}, "hostKey", "not an OpenSSH public key line"),
        ({"hostKey": "ssh-rsa " + HOST_KEY.split()[1]}, "hostKey", "does not decode"),
        ({"address": "192.0.2.10"}, "address", "192.0.2.0/24"),
        ({"address": "198.51.100.7"}, "address", "198.51.100.0/24"),
        ({"address": "203.0.113.250"}, "address", "203.0.113.0/24"),
        ({"address": "2001:db8::10"}, "address", "2001:db8::/32"),
        ({"address": "edge.example.com"}, "address", "RFC 2606"),
    ],
)  # fmt: skip
def test_placeholders_that_would_fail_at_up_are_refused_at_preview(machine, key, words):
    (found,) = problems({"machines": [{**MACHINE, **machine}]})
    assert found.startswith(f"gvisor-fleet:machines[0].{key}: "), found
    assert words in found
    assert "ssh-keyscan" in found if key == "hostKey" else "real name or address" in found


@pytest.mark.parametrize("cidr", ["203.0.113.7/32", "198.51.100.0/24", "192.0.2.128/25", "2001:db8::/48"])
def test_documentation_networks_are_refused_as_allowed_cidr(cidr):
    aws = {"name": "ec2", "backend": "aws", "arch": "x86_64", "allowedCidr": cidr}
    (found,) = problems({"machines": [aws]})
    assert found.startswith("gvisor-fleet:machines[0].allowedCidr: ") and "documentation" in found
    assert "checkip" in found


def test_real_addresses_and_keys_pass():
    machines = [
        {**MACHINE, "address": "10.0.2.15", "hostKey": HOST_KEY},
        {**MACHINE, "name": "m2", "address": "edge-1.corp.internal"},
        {"name": "ec2", "backend": "aws", "arch": "x86_64", "allowedCidr": "198.18.0.0/15"},
    ]
    s = load_settings({"machines": machines}, has_private_key=True)
    assert [m.address for m in s.machines][:2] == ["10.0.2.15", "edge-1.corp.internal"]


def test_booleans_follow_one_rule_everywhere():
    """What the Pulumi CLI stores ("true"/"false") is a boolean in every key; nothing else is."""
    s = load_settings(
        {
            "defaultRuntime": "true",
            "machines": [{**MACHINE, "buildsImages": "false"}],
            "kubernetes": {"enabled": "true"},
            "overhead": {"enabled": "true"},
        },
        has_private_key=True,
    )
    assert s.gvisor.default_runtime is True and s.machines[0].builds_images is False
    assert s.kubernetes is not None and s.overhead is not None and s.overhead.enabled
    found = problems(
        {
            "defaultRuntime": "yes",
            "machines": [{**MACHINE, "buildsImages": "on"}],
            "kubernetes": {"enabled": 1},
            "overhead": {"enabled": "on"},
        }
    )
    assert [p.split(": ", 1)[1] for p in found] == ["must be true or false"] * 4, found


def test_whole_numbers_follow_one_rule_everywhere():
    """Digits as a string (what the CLI stores) count as a whole number in every key."""
    s = load_settings(
        {
            "stepTimeout": "120",
            "machines": [{**MACHINE, "port": "2222"}],
            "kubernetes": {"verifyTimeoutSeconds": "60"},
            "overhead": {"budget": "60"},
        },
        has_private_key=True,
    )
    assert s.gvisor.step_timeout == 120 and s.machines[0].port == 2222
    assert s.kubernetes is not None and s.kubernetes.verify_timeout_seconds == 60
    assert s.overhead is not None and s.overhead.budget == 60


def test_every_layer_reports_at_once_the_overhead_too():
    found = problems(
        {
            "releas": "x",
            "platform": "ptrace",
            "machines": [{**MACHINE, "user": "Bad User"}],
            "kubernetes": {"namespace": "Bad"},
            "overhead": {"budget": 1},
        }
    )
    keys = [p.split(": ", 1)[0] for p in found]
    assert keys == [
        "gvisor-fleet:releas",
        "gvisor-fleet:platform",
        "gvisor-fleet:machines[0].user",
        "gvisor-fleet:kubernetes.namespace",
        "gvisor-fleet:overhead.budget",
    ], found


def test_nested_unknown_keys_suggest_and_list():
    (found,) = problems({"kubernetes": {"k3s": {"versoin": "v1.36.4+k3s1"}, "cluster": "k3s"}, "machines": [MACHINE]})
    assert found.startswith("gvisor-fleet:kubernetes.k3s.versoin: is not a setting of kubernetes.k3s; ")
    assert "did you mean 'version'?" in found and "known keys: version, releaseUrl" in found


def test_a_number_where_a_string_belongs_says_to_quote_it():
    """YAML reads `image: 24.04` as a number; the fix is quoting."""
    from components.fleet.specs import local_arch

    mp = {"name": "mp", "backend": "multipass", "arch": local_arch(), "image": 24.04}
    (found,) = problems({"machines": [mp]})
    assert found == "gvisor-fleet:machines[0].image: 24.04 is a number, not a string; quote it in YAML ('24.04')"
