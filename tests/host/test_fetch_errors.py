"""Why a host could not fetch the release, said plainly: its own message for a
name that does not resolve, a refused connection, a connection that is never
answered, a TLS failure, a server that never answers and a release that is not
there (HTTP 404), with curl and with wget, each leaving the host byte for byte
as it was (host_state.digest).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.host.agent_calls import PREFIX
from tests.host.host_state import HostSnapshot, refusal, remove_command
from tests.host.sandbox import Sandbox
from tests.support import loopback, mirror
from tests.support.mirror import MIRROR_PORT, MIRROR_URL, Releases

pytestmark = pytest.mark.host

CLOSED_PORT = 18097  # nothing listens there in the sandbox's own network
SILENT_PORT = 18081  # takes the connection, never answers (tests/support/loopback.py silent)
SELF_SIGNED_PORT = 18443
FULL_PORT = 18099  # its accept queue is full: the kernel drops new SYNs, so connecting times out
STEP_TIMEOUT = 8  # bounds each case, the connect timeout included (min of 20 s and what is left)


@dataclass(frozen=True)
class Case:
    base_url: str
    says: str  # the phrase only this kind of failure prints


CASES = {
    "dns": Case("http://release-mirror.invalid", "cannot resolve release-mirror.invalid (DNS)"),
    "connect": Case(f"http://127.0.0.1:{CLOSED_PORT}", f"cannot connect to 127.0.0.1:{CLOSED_PORT}"),
    "connect-timeout": Case(f"http://127.0.0.1:{FULL_PORT}", "no answer within"),
    "tls-plain-http": Case(f"https://127.0.0.1:{MIRROR_PORT}", f"TLS with 127.0.0.1:{MIRROR_PORT} failed"),
    "tls-self-signed": Case(f"https://127.0.0.1:{SELF_SIGNED_PORT}", f"TLS with 127.0.0.1:{SELF_SIGNED_PORT} failed"),
    "timeout": Case(f"http://127.0.0.1:{SILENT_PORT}", "stopped at a limit"),
    "404": Case(MIRROR_URL, "gVisor release not found at"),
}

# Listens with a backlog of 0 and never accepts; connects to itself until a
# connection is not answered: from then on Linux drops every SYN to the port
# (no RST while net.ipv4.tcp_abort_on_overflow is 0, a new namespace's
# default), as a firewall that drops packets would. Loopback only, no iptables.
FULL_LISTENER = """
import socket, sys, time
port, ready = int(sys.argv[1]), sys.argv[2]
listener = socket.socket()
listener.bind(("127.0.0.1", port))
listener.listen(0)
fillers = []
while len(fillers) < 8:
    s = socket.socket()
    s.settimeout(1)
    try:
        s.connect(("127.0.0.1", port))
    except TimeoutError:
        open(ready, "w").close()
        time.sleep(3600)
    fillers.append(s)
sys.exit("the accept queue never filled: is net.ipv4.tcp_abort_on_overflow set?")
"""


def serve_broken_servers(host: Sandbox, work: Path) -> None:
    host.sh(f"nohup python3 {loopback.__file__} {mirror.MIRROR_ROOT} {SILENT_PORT} silent >/dev/null 2>&1 &")
    cert, key = work / "cert.pem", work / "key.pem"
    work.mkdir(parents=True, exist_ok=True)
    host.sh(
        f"openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=127.0.0.1 -keyout {key} -out {cert} 2>/dev/null"
    )
    # An https server with a certificate no one signed, serving the mirror.
    serve = f"{loopback.__file__} {mirror.MIRROR_ROOT} {SELF_SIGNED_PORT} --tls {cert} {key}"
    host.sh(f"nohup python3 {serve} >/dev/null 2>&1 &")
    (work / "full.py").write_text(FULL_LISTENER)
    full = work / "full.ready"
    host.sh(f"nohup python3 {work / 'full.py'} {FULL_PORT} {full} >{work / 'full.log'} 2>&1 &")
    # Ready once a connection to it went unanswered (at most 8 fillers of 1 s each).
    wait = f"i=0; until [ -e {full} ]; do i=$((i+1)); [ $i -lt 60 ] || exit 1; sleep 0.2; done"
    assert host.run(["sh", "-c", wait]).returncode == 0, (work / "full.log").read_text()
    for port in (SILENT_PORT, SELF_SIGNED_PORT):
        # Listening once curl no longer says "connection refused" (7).
        probe = f"curl -s -m 1 -o /dev/null http://127.0.0.1:{port}/x"
        host.sh(f"i=0; until {probe}; [ $? != 7 ]; do i=$((i+1)); [ $i -lt 50 ]; sleep 0.2; done")


@pytest.mark.parametrize("fetcher", ["curl", "wget"])
def test_each_fetch_failure_has_its_own_message_and_changes_nothing(
    host: Sandbox, releases: Releases, tmp_path: Path, fetcher: str
):
    serve_broken_servers(host, tmp_path / "servers")
    if fetcher == "wget":
        remove_command(host, tmp_path / "absent", "curl")
        assert host.sh("command -v wget || true"), "this test needs wget installed (sh tests/setup.sh installs it)"
    said = {}
    for kind, case in CASES.items():
        release = releases.missing if kind == "404" else releases.current
        snapshot = HostSnapshot(host)
        err = refusal(
            host.agent(
                "install", case.base_url, release, PREFIX, "-", env={"GVISOR_FLEET_STEP_TIMEOUT": str(STEP_TIMEOUT)}
            )
        )
        url = f"{case.base_url}/{release}/x86_64/"
        assert case.says in err and url in err, f"{fetcher}, {kind}:\n{err}"
        snapshot.assert_unchanged()
        said[kind] = err
    # Each message is its kind's alone: an unreachable host never reads as a missing release.
    for kind, err in said.items():
        others = {case.says for k, case in CASES.items() if k != kind and case.says != CASES[kind].says}
        assert not [phrase for phrase in others if phrase in err], f"{fetcher}, {kind}:\n{err}"
    # The connect bound named is the one applied: the step's, when less than 20 s is left of it.
    bound = re.search(r"no answer within (\d+)s \(timeout\)", said["connect-timeout"])
    assert bound and 0 < int(bound[1]) <= STEP_TIMEOUT, f"{fetcher}:\n{said['connect-timeout']}"
    # Reachability problems point at the way out for hosts without internet.
    for kind in ("dns", "connect", "connect-timeout", "tls-plain-http"):
        assert "gvisor-fleet:releaseFetch" in said[kind]
