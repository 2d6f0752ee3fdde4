"""The host tier leaves the machine running it as it found it (collected last).

Every sandbox writes only into its own overlays; a path an engine writes that
is not behind one (containerd's /opt/containerd was one) shows up here.
"""

from __future__ import annotations

import pytest

from tests.host.machine_tree import machine_tree

pytestmark = pytest.mark.host


def test_the_machines_own_files_are_unchanged_after_the_tier(machine_before: dict[str, tuple[int, int, int]]):
    after = machine_tree()
    added = sorted(set(after) - set(machine_before))
    removed = sorted(set(machine_before) - set(after))
    changed = sorted(p for p in set(after) & set(machine_before) if after[p] != machine_before[p])
    assert not (added or removed or changed), f"added {added[:20]}, removed {removed[:20]}, changed {changed[:20]}"
