"""What tests/toolchain/ builds (cached under CACHE): where it is, built on first use."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from tests.support.paths import REPO, TOOLCHAIN


def _print_dir(script: str, flag: str = "--print-dir") -> Path:
    out = subprocess.run(["sh", str(TOOLCHAIN / script), flag], capture_output=True, text=True, check=True)
    return Path(out.stdout.strip())


def gvisor_dir() -> Path:
    """runsc and the shim built from gVisor's go branch: <dir>/<arch>/, <dir>/VERSION, <dir>/RUNSC_VERSION."""
    return _print_dir("build-gvisor.sh")


def build_gvisor() -> Path:
    out = gvisor_dir()
    if not (out / "VERSION").exists():
        subprocess.run(["sh", str(TOOLCHAIN / "build-gvisor.sh")], check=True, stdout=subprocess.DEVNULL)
    return out


def containerd2_dir() -> Path:
    return _print_dir("build-containerd.sh")


def build_containerd2() -> Path:
    """containerd 2.x binaries for the machines (tests/toolchain/build-containerd.sh, built on first use).

    Debian's containerd 1.6 cannot run the current gVisor shim (it speaks
    containerd 2's shim bootstrap protocol), so the machines run containerd 2.
    """
    out = containerd2_dir()
    if not (out / "containerd").exists():
        subprocess.run(["sh", str(TOOLCHAIN / "build-containerd.sh")], check=True, stdout=subprocess.DEVNULL)
    return out


def kubernetes_release_dir() -> Path:
    """The local Kubernetes release the set-up files for `releaseDir` (<dir>/<version>/<goarch>/; built if missing)."""
    subprocess.run(["sh", str(TOOLCHAIN / "make-kubernetes-dir.sh")], check=True)
    return _print_dir("make-kubernetes-dir.sh")


def pulumi_bin_dir() -> Path:
    return _print_dir("build-pulumi.sh", "--print-bin-dir")


def build_pulumi() -> Path:
    """Builds (or finds cached) the engine, language host and command provider."""
    out = subprocess.run(["sh", str(TOOLCHAIN / "build-pulumi.sh")], stdout=subprocess.PIPE, text=True, check=True)
    return Path(out.stdout.strip().splitlines()[-1])


def pulumi_env() -> dict[str, str]:
    """The environment tests/toolchain/pulumi-env.sh sets up (offline engine)."""
    out = subprocess.run(
        ["sh", "-c", '. "$1" && env -0', "sh", str(TOOLCHAIN / "pulumi-env.sh")],
        capture_output=True,
        check=True,
    )
    env = {}
    for item in out.stdout.split(b"\0"):
        key, sep, value = item.decode().partition("=")
        if sep:
            env[key] = value
    return env


# The kubernetes provider the program pins: the engine's plugin of that version must be installed.
KUBERNETES_VERSION = re.search(
    r"^pulumi-kubernetes==(\S+)$", (REPO / "requirements.txt").read_text(), re.MULTILINE
).group(1)  # type: ignore[union-attr]


def built_engine_env() -> dict[str, str] | None:
    """pulumi_env(), if the engine and its kubernetes provider are built; None if not."""
    env = pulumi_env()
    bin_dir = Path(env["GVISOR_FLEET_PULUMI_BIN"])
    kubernetes = Path(env["PULUMI_HOME"]) / "plugins" / f"resource-kubernetes-v{KUBERNETES_VERSION}"
    if not (bin_dir / "pulumi").is_file() or not kubernetes.is_dir():
        return None
    return env
