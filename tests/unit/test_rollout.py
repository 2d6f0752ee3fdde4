"""Rollout in waves (gvisor-fleet:rollout): the plan, the setting, and the wiring under mocks."""

from __future__ import annotations

import pulumi
import pytest

from components.gvisor.rollout import Rollout, plan_waves, waits_for, wave_size
from components.program import build
from components.settings import SettingsError, load_settings
from tests.unit.mocks import KEY, configure

FLEET = [("a1", "x86_64"), ("a2", "x86_64"), ("b1", "aarch64"), ("a3", "x86_64"), ("b2", "aarch64"), ("a4", "x86_64")]


@pytest.mark.parametrize(
    ("rollout", "waves"),
    [
        # The default: the first machine of each arch, then the rest at once.
        (Rollout(), [["a1", "b1"], ["a2", "a3", "b2", "a4"]]),
        (Rollout(waves=(1, 2)), [["a1", "b1"], ["a2"], ["a3", "b2"], ["a4"]]),
        # The last size repeats; a percentage is of the whole fleet (6), rounded up.
        (Rollout(waves=("34%",)), [["a1", "b1"], ["a2", "a3", "b2"], ["a4"]]),
        (Rollout(canaries=("b2",), waves=(2,)), [["b2"], ["a1", "a2"], ["b1", "a3"], ["a4"]]),
        (Rollout(canaries=(), waves=(3,)), [["a1", "a2", "b1"], ["a3", "b2", "a4"]]),
        (Rollout(canaries=(), waves=("100%",)), [["a1", "a2", "b1", "a3", "b2", "a4"]]),
        (None, [["a1", "a2", "b1", "a3", "b2", "a4"]]),  # rollout: false
    ],
    ids=["default", "sizes", "percent", "named-canary", "no-canary", "one-wave", "off"],
)
def test_plan_puts_every_machine_in_exactly_one_wave_in_order(rollout, waves):
    plan = plan_waves(FLEET, rollout)
    assert plan == waves
    assert sorted(n for w in plan for n in w) == sorted(n for n, _ in FLEET)


def test_a_machine_waits_for_every_machine_of_the_wave_before_and_no_other():
    order = waits_for([["a1", "b1"], ["a2", "a3"], ["a4"]])
    assert order == [
        ("a1", []),
        ("b1", []),
        ("a2", ["a1", "b1"]),
        ("a3", ["a1", "b1"]),
        ("a4", ["a2", "a3"]),
    ]


def test_small_fleets_and_edge_sizes():
    assert plan_waves([], Rollout()) == []
    assert plan_waves([("only", "x86_64")], Rollout()) == [["only"]]
    assert wave_size("1%", 3) == 1 and wave_size("50%", 3) == 2 and wave_size(5, 3) == 5


def raw(rollout: object, names: tuple[str, ...] = ("a1", "a2")) -> dict[str, object]:
    machines = [{"name": n, "address": f"10.0.2.{i + 1}", "arch": "x86_64"} for i, n in enumerate(names)]
    return {"machines": machines, "rollout": rollout}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"canaries": ["a2"], "waves": [1, "25%"]}, Rollout(("a2",), (1, "25%"))),
        ({"waves": ["3"]}, Rollout(None, (3,))),
        ({}, Rollout()),
        (False, None),
        ("false", None),  # as `pulumi config set` stores it
    ],
)
def test_the_setting_reads(value, expected):
    assert load_settings(raw(value), has_private_key=True).gvisor.rollout == expected


def test_the_default_is_waves():
    settings = load_settings({"machines": raw(None)["machines"]}, has_private_key=True)
    assert settings.gvisor.rollout == Rollout()


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"canaries": ["web-9"]}, "gvisor-fleet:rollout.canaries: 'web-9' is not a machine of gvisor-fleet:machines"),
        ({"canaries": "a1"}, "gvisor-fleet:rollout.canaries: must be a list of machine names"),
        ({"canaries": ["a1", "a1"]}, "gvisor-fleet:rollout.canaries: names a machine twice"),
        ({"waves": []}, "gvisor-fleet:rollout.waves: must be a non-empty list of wave sizes"),
        ({"waves": [0]}, "gvisor-fleet:rollout.waves[0]: 0 machines: a wave holds at least 1"),
        ({"waves": [2, "150%"]}, "gvisor-fleet:rollout.waves[1]: '150%' is not a wave size"),
        ({"wave": [2]}, "gvisor-fleet:rollout.wave: is not a setting of the rollout"),
        ("fast", "gvisor-fleet:rollout: must be false or an object"),
    ],
)
def test_bad_values_name_the_key_and_the_fix(value, message):
    with pytest.raises(SettingsError) as err:
        load_settings(raw(value), has_private_key=True)
    assert any(p.startswith(message) for p in err.value.problems), err.value.problems


def machines(*names_arches: tuple[str, str]) -> list[dict[str, str]]:
    return [{"name": n, "address": f"10.0.2.{i + 1}", "arch": a} for i, (n, a) in enumerate(names_arches)]


@pulumi.runtime.test
def test_each_install_step_waits_for_the_verify_steps_of_the_wave_before(mocks):
    """The whole program: the engine may start a machine's install only after the wave before verified."""
    fleet = machines(("a1", "x86_64"), ("b1", "aarch64"), ("a2", "x86_64"), ("a3", "x86_64"), ("a4", "x86_64"))
    configure(machines=fleet, sshPrivateKey=KEY, rollout={"waves": [1, 2]})
    program = build(pulumi.Config("gvisor-fleet"))
    assert list(program.hosts) == ["a1", "b1", "a2", "a3", "a4"], "outputs keep the order of the machine list"

    def check(_):
        verify = {f"{n}-verify" for n in ("a1", "b1", "a2", "a3", "a4")}
        waited = {n: mocks.depends_on[f"{n}-install"] & verify for n in program.hosts}
        assert waited == {
            "a1": set(),
            "b1": set(),
            "a2": {"a1-verify", "b1-verify"},
            "a3": {"a2-verify"},
            "a4": {"a2-verify"},
        }
        # The other steps wait for their own install step, so they wait for the wave too.
        for n in program.hosts:
            assert f"{n}-install" in mocks.depends_on[f"{n}-docker"]
            assert not mocks.depends_on[f"{n}-docker"] & verify

    return program.outputs()["allChecksPassed"].apply(check)


@pulumi.runtime.test
def test_rollout_false_lets_every_machine_start_at_once(mocks):
    configure(machines=machines(("a1", "x86_64"), ("a2", "x86_64")), sshPrivateKey=KEY, rollout=False)
    program = build(pulumi.Config("gvisor-fleet"))

    def check(_):
        assert not any(d.endswith("-verify") for d in mocks.depends_on["a2-install"])

    return program.outputs()["allChecksPassed"].apply(check)
