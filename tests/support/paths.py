"""Where the repository, its toolchain scripts and the suite's cache are."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).parents[2]
TOOLCHAIN = REPO / "tests" / "toolchain"
# Built toolchains, VM images and the release mirrors; kept between runs (tests/toolchain/*.sh use the same).
CACHE = Path(os.environ.get("GVISOR_FLEET_CACHE") or Path.home() / ".cache" / "gvisor-fleet")
