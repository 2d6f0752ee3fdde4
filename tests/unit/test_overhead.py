"""gvisor-fleet:overhead: its settings, its step in the resource graph, its stack output."""

from __future__ import annotations

import json
from pathlib import Path

import pulumi
import pytest

from components.gvisor.settings import GvisorSettings
from components.overhead.measure import measure_command, overhead_from_stdout
from components.overhead.settings import OverheadSettings, parse_overhead_settings
from components.program import build
from components.settings import SettingsError
from tests.unit.mocks import KEY, RecordingMocks, configure, use

RECORDED = Path(__file__).parents[1] / "report" / "recorded" / "host-docker.json"
MACHINES = [
    {"name": "amd", "address": "10.0.0.1", "arch": "x86_64"},
    {"name": "arm", "address": "10.0.0.2", "arch": "aarch64"},
]


def test_off_by_default_and_when_disabled():
    assert parse_overhead_settings(None) is None
    assert parse_overhead_settings({"enabled": False, "budget": 100}) is None
    assert parse_overhead_settings(False) is None


def test_defaults_and_values():
    assert parse_overhead_settings({}) == OverheadSettings(enabled=True)
    assert parse_overhead_settings(True) == OverheadSettings(enabled=True)
    got = parse_overhead_settings({"budget": "120", "runs": 7, "engine": "containerd"})
    assert got == OverheadSettings(enabled=True, budget=120, runs=7, engine="containerd")


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("yes", "gvisor-fleet:overhead: must be an object"),
        ({"budget": 5}, "gvisor-fleet:overhead.budget: '5' must be a whole number of seconds from 30 to 3600"),
        ({"budget": True}, "gvisor-fleet:overhead.budget: 'True' must be a whole number of seconds"),
        ({"runs": 0}, "gvisor-fleet:overhead.runs: '0' must be a whole number of runs from 1 to 100"),
        ({"engine": "podman"}, "gvisor-fleet:overhead.engine: 'podman' is not supported; use one of auto, docker"),
        ({"enabled": "on"}, "gvisor-fleet:overhead.enabled: must be true or false"),
        ({"budgett": 60}, "gvisor-fleet:overhead.budgett: is not a setting of the measurement; did you mean 'budget'?"),
    ],
)
def test_each_bad_value_is_named_with_the_fix(raw, message):
    with pytest.raises(SettingsError) as err:
        parse_overhead_settings(raw)
    assert message in str(err.value)


def test_an_engine_the_host_layer_leaves_off_is_refused():
    with pytest.raises(SettingsError) as err:
        parse_overhead_settings({"engine": "docker"}, docker="off")
    assert "gvisor-fleet:overhead.engine: 'docker' is off for gVisor (gvisor-fleet:docker: off)" in str(err.value)


def test_a_setting_change_changes_only_the_measurement_command():
    gv = GvisorSettings()
    a = measure_command(gv, OverheadSettings(enabled=True, budget=100), sudo=False)
    b = measure_command(gv, OverheadSettings(enabled=True, budget=200), sudo=False)
    assert a != b and a.startswith("sh -s -- measure auto auto auto runsc ")
    assert measure_command(gv, OverheadSettings(enabled=True), sudo=True).startswith("sudo -n sh -s -- measure ")


def test_the_output_is_the_scripts_json_line():
    data = json.loads(RECORDED.read_text())
    stdout = "noise=1\noverhead=" + json.dumps(data, separators=(",", ":")) + "\n"
    assert overhead_from_stdout(stdout) == data
    assert overhead_from_stdout("no measurement\n") == {}
    with pytest.raises(ValueError, match="not an overhead measurement"):
        overhead_from_stdout('overhead={"v":1}\n')


def test_bad_overhead_config_stops_the_program_before_any_resource(mocks):
    configure(machines=MACHINES, sshPrivateKey=KEY, overhead={"budget": 1})
    with pytest.raises(pulumi.RunError, match=r"gvisor-fleet:overhead\.budget"):
        build(pulumi.Config("gvisor-fleet"))
    assert mocks.resources == []


def test_no_measurement_step_unless_asked(mocks):
    configure(machines=MACHINES, sshPrivateKey=KEY)
    program = build(pulumi.Config("gvisor-fleet"))
    assert program.overhead == {}
    assert not [r for r in mocks.resources if r.name.endswith("-overhead")]


@pulumi.runtime.test
def test_one_measurement_per_machine_after_its_host_and_in_its_outputs():
    recorded = json.loads(RECORDED.read_text())
    line = "overhead=" + json.dumps(recorded, separators=(",", ":")) + "\n"
    mocks = use(RecordingMocks(stdout={"amd-overhead": line, "arm-overhead": line}))
    configure(machines=MACHINES, sshPrivateKey=KEY, overhead={"budget": 120, "runs": 3})
    program = build(pulumi.Config("gvisor-fleet"))
    outputs = program.outputs()

    def check(machines_out):
        steps = {r.name: r for r in mocks.of_type("command:remote:Command") if r.name.endswith("-overhead")}
        assert set(steps) == {"amd-overhead", "arm-overhead"}
        for name in ("amd", "arm"):
            create = steps[f"{name}-overhead"].inputs["create"]
            assert " measure auto auto auto runsc " in create and " 120 3 " in create
            # Waits for every step of the machine's GvisorHost, verify included.
            assert f"{name}-verify" in mocks.depends_on[f"{name}-overhead"]
            assert machines_out[name]["overhead"] == recorded
            assert machines_out[name]["runsc_ok"] == "true", "the host facts stay"

    return pulumi.Output.from_input(outputs["machines"]).apply(check)
