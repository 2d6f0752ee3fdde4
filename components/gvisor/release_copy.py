"""gvisor-fleet:releaseFetch once: the release fetched here, copied to each host.

The machine running Pulumi fetches and checks the archive once per release
and arch (release_fetch.py); each host gets it over its SSH connection with
`CopyToRemote` (SFTP as the login user, so into /var/tmp, which any user may
write and which survives a reboot), and the install step checks it again
before installing (`install-file`). A companion command with only a delete
removes the copy on destroy, and the previous copy when the release changes.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from functools import cache

import pulumi
from pulumi_command import remote

from components.fleet.machine import Machine
from components.gvisor.release_fetch import FetchedRelease, Limits, ReleaseFetchError, default_cache, fetch_release
from components.gvisor.settings import GvisorSettings

REMOTE_DIR = "/var/tmp"


def remote_path(arch: str, sha512: str) -> str:
    """Where a host keeps the copy: one name per content, so a new release never overwrites the old copy."""
    return f"{REMOTE_DIR}/gvisor-fleet-{arch}-{sha512[:32]}.tar.bz2"


@dataclass(frozen=True)
class ReleaseCopy:
    """One machine's copy of the checked release."""

    fetched: FetchedRelease
    install_dir: str

    @property
    def remote_path(self) -> str:
        return remote_path(self.fetched.arch, self.fetched.sha512)

    @property
    def install_args(self) -> tuple[str, ...]:
        """The install step's `install-file` arguments."""
        return (self.remote_path, self.fetched.sha512, self.fetched.release, self.install_dir)

    def resources(
        self, name: str, machine: Machine, parent: pulumi.Resource, after: list[pulumi.Resource]
    ) -> list[pulumi.Resource]:
        """The copy (which the install step waits for) and its clean-up."""
        # A machine created anew gets the copy again.
        triggers = [machine.instance] if machine.instance is not None else []
        copy = remote.CopyToRemote(
            f"{name}-release-copy",
            connection=machine.connection,
            source=pulumi.FileAsset(str(self.fetched.path)),
            remote_path=self.remote_path,
            triggers=triggers or None,
            opts=pulumi.ResourceOptions(parent=parent, depends_on=after),
        )
        # CopyToRemote never deletes what it copied. Replaced whenever the path
        # changes, so the previous copy goes; deleted before its replacement
        # runs, so on a replaced machine (same address) it cannot remove the
        # new copy. Nothing depends on it: its replacement touches nothing else.
        remote.Command(
            f"{name}-release-cleanup",
            connection=machine.connection,
            delete=f"rm -f -- {shlex.quote(self.remote_path)}",
            triggers=[self.remote_path, *triggers],
            add_previous_output_in_env=False,
            opts=pulumi.ResourceOptions(parent=parent, depends_on=[copy], delete_before_replace=True),
        )
        return [copy]


@cache
def _fetched(
    base_url: str, release: str, arch: str, pin: str | None, fallback: str | None, total: int
) -> FetchedRelease:
    """Once per release and arch for the whole program, however many hosts share them."""
    try:
        fetched = fetch_release(base_url, release, arch, default_cache(), pin, fallback, Limits(total=total))
    except ReleaseFetchError as err:
        raise pulumi.RunError(f"gvisor-fleet:releaseFetch once: {err}") from None
    how = "in the cache, fetched before" if fetched.cached else "fetched"
    pulumi.log.info(f"gVisor {release} for {arch}: {fetched.path} (SHA-512 checked; {how} from {fetched.source})")
    return fetched


def plan_release_copy(machine: Machine, gv: GvisorSettings) -> ReleaseCopy | None:
    """The checked release for this machine's arch, or None when each host downloads (releaseFetch host)."""
    if gv.release_fetch != "once":
        return None
    pin = gv.sha512.get(machine.arch)
    fetched = _fetched(gv.base_url, gv.release, machine.arch, pin, gv.release_dir, gv.step_timeout)
    return ReleaseCopy(fetched, gv.install_dir)
