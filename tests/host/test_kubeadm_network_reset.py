"""The kubeadm node script's cleanup of the pod network's iptables rules, on real iptables.

Runs its own function in a network namespace of its own: the CNI bridge
plugin's rules (comments with quoted spaces) and KUBE- chains go, and a rule
of someone else's stays.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest

from components.kube.kubeadm import node_script
from tests.support.shell import shell_function

pytestmark = pytest.mark.skipif(shutil.which("iptables") is None, reason="needs iptables (the set-up installs it)")

ADD = """
iptables -t nat -N CNI-51da1032
iptables -t nat -A CNI-51da1032 -d 10.244.0.0/24 -j ACCEPT
iptables -t nat -A POSTROUTING -s 10.244.0.2/32 -m comment --comment 'name: "gvisor-fleet" id: "8612"' -j CNI-51da1032
iptables -t nat -A POSTROUTING -s 192.0.2.9/32 -j MASQUERADE
iptables -N KUBE-FIREWALL
iptables -A INPUT -j KUBE-FIREWALL
"""


def test_the_cni_and_kube_rules_go_and_others_stay():
    drop = shell_function(node_script(), "drop_kube_chains")
    have = 'have() { command -v "$1" >/dev/null 2>&1; }'
    line = "\n".join(["set -e", have, drop, ADD, "drop_kube_chains iptables", "iptables-save"])
    out = subprocess.run(["unshare", "--net", "sh", "-c", line], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "CNI-" not in out.stdout and "KUBE-" not in out.stdout, out.stdout
    assert "-A POSTROUTING -s 192.0.2.9/32 -j MASQUERADE" in out.stdout, out.stdout
