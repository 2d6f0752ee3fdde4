"""How the host agent picks an engine's reason out of its log (pick_reason), run under dash.

The lines are shaped as containerd and dockerd write them: logrus text, logrus
JSON, and plain stderr with a Go panic. The host tier sees the same choices
made on real engines' logs (tests/host/test_running_engines.py).
"""

from __future__ import annotations

import shutil
import subprocess

import pytest

from components.gvisor.agent import SCRIPT_PATH
from tests.support.shell import shell_function

SH = shutil.which("dash") or "sh"


def function(name: str) -> str:
    return shell_function(SCRIPT_PATH.read_text(), name)


def pick(part: str, log: str) -> str:
    script = function("pick_reason") + f'pick_reason "{part}"'
    return subprocess.run([SH, "-c", script], input=log, capture_output=True, text=True, check=True).stdout


CNI = (
    'time="t" level=error msg="failed to load cni during init, please check CRI plugin status" '
    'error="cni config load failed: no network config found in /etc/cni/net.d"\n'
)
CRI_TEXT = (
    'time="t" level=info msg="starting containerd" version=1.6.20\n'
    'time="t" level=warning msg="failed to load plugin io.containerd.grpc.v1.cri" '
    'error="failed to find snapshotter \\"nope\\""\n'
    + CNI
    + 'time="t" level=info msg="containerd successfully booted"\n'
)
CRI_JSON = (
    '{"level":"info","msg":"starting containerd","time":"t"}\n'
    '{"error":"failed to find snapshotter \\"nope\\"","level":"warning",'
    '"msg":"failed to load plugin io.containerd.grpc.v1.cri","time":"t"}\n'
    '{"error":"cni config load failed","level":"error","msg":"failed to load cni during init","time":"t"}\n'
    '{"level":"info","msg":"containerd successfully booted in 0.009450s","time":"t"}\n'
)
FATAL_JSON = (
    '{"level":"info","msg":"starting containerd","time":"t"}\n'
    '{"error":"mkdir /run/x: not a directory","level":"fatal","msg":"failed to create state dir","time":"t"}\n'
)
PANIC = (
    "-- start 1\n"
    "panic: interface conversion: interface {} is int64, not string\n\n"
    "goroutine 1 [running]:\n"
    "github.com/containerd/containerd/v2/x.y(0x1)\n"
    "\t/go/x.go:12 +0x1\n"
    "containerd.service: Main process exited, code=exited, status=2/INVALIDARGUMENT\n"
    "Failed to start containerd.service - containerd container runtime.\n"
)
DOCKERD = (
    'time="t" level=info msg="Starting up"\n'
    "unable to configure the Docker daemon with file /etc/docker/daemon.json: invalid log level: nope\n"
)
DOCKERD_REASON = ": unable to configure the Docker daemon with file /etc/docker/daemon.json: invalid log level: nope"


@pytest.mark.parametrize(
    ("part", "log", "reason"),
    [
        ("cri", CRI_TEXT, ': failed to load plugin io.containerd.grpc.v1.cri: failed to find snapshotter "nope"'),
        ("cri", CRI_JSON, ': failed to load plugin io.containerd.grpc.v1.cri: failed to find snapshotter "nope"'),
        ("start", FATAL_JSON, ": failed to create state dir: mkdir /run/x: not a directory"),
        ("start", PANIC, ": panic: interface conversion: interface {} is int64, not string"),
        ("start", DOCKERD, DOCKERD_REASON),
        ("start", CNI, ": failed to load cni during init, please check CRI plugin status: cni config load failed: "
                       "no network config found in /etc/cni/net.d"),
        ("start", 'time="t" level=info msg="containerd successfully booted"\n', ""),
    ],
    ids=["cri-text", "cri-json", "fatal-json", "go-panic", "dockerd-stderr", "only-cni", "nothing"],
)  # fmt: skip
def test_the_reason_is_chosen_by_level_and_subject(part: str, log: str, reason: str):
    assert pick(part, log) == reason
