import tomllib

from components.gvisor.runsc_config import docker_runtime_args, effective_flags, render_runsc_toml


def test_runsc_toml_quotes_every_value_and_parses():
    flags = effective_flags("systrap", "sandbox", {"debug": True, "debug-log": 'C:\\"x"', "watchdog-action": 1})
    parsed = tomllib.loads(render_runsc_toml(flags))
    assert parsed == {
        "runsc_config": {
            "debug": "true",
            "debug-log": 'C:\\"x"',
            "network": "sandbox",
            "platform": "systrap",
            "watchdog-action": "1",
        }
    }


def test_docker_and_containerd_networks_stay_separate():
    docker = docker_runtime_args(effective_flags("systrap", "none", {}))
    containerd = tomllib.loads(render_runsc_toml(effective_flags("systrap", "sandbox", {})))
    assert docker == ["--network=none", "--platform=systrap"]
    assert containerd["runsc_config"]["network"] == "sandbox"


def test_render_is_stable_whatever_the_input_order():
    a = render_runsc_toml(effective_flags("kvm", "host", {"b": "1", "a": "2"}))
    b = render_runsc_toml(effective_flags("kvm", "host", {"a": "2", "b": "1"}))
    assert a == b
