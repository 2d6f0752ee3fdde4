"""cloud-init seeds for machines the fleet creates (pure, but for `secret_user_data`).

Every created machine (qemu, multipass, aws) gets the same user-data: one
login user with the stack's SSH key and passwordless sudo (or root itself),
password logins off, and exactly one SSH host key, the one the program made
and pins on every connection. Other host key types are not generated, so a
client that pins the ed25519 key never meets a different one. A VM on the
stack's LAN also gets its LAN address (components/fleet/lan.py).
"""

from __future__ import annotations

import pulumi
import yaml

from components.fleet.lan import LanNic, cloud_config

SUDO_ALL = "ALL=(ALL) NOPASSWD:ALL"


def user_data(
    hostname: str,
    user: str,
    authorized_key: str,
    host_private_key: str,
    host_public_key: str,
    lan: LanNic | None = None,
) -> str:
    """#cloud-config user-data (a secret: it carries the host's private key)."""
    doc: dict[str, object] = {
        "hostname": hostname,
        "preserve_hostname": False,
        "manage_etc_hosts": True,  # the name resolves (sudo looks it up)
        "ssh_pwauth": False,
        # Only the pinned ed25519 host key: remove any baked into the image,
        # generate no others.
        "ssh_deletekeys": True,
        "ssh_genkeytypes": [],
        "ssh_keys": {
            "ed25519_private": host_private_key.strip() + "\n",
            "ed25519_public": host_public_key.strip(),
        },
    }
    if user == "root":
        doc["disable_root"] = False
        doc["users"] = [{"name": "root", "lock_passwd": True, "ssh_authorized_keys": [authorized_key.strip()]}]
    else:
        doc["users"] = [
            {
                "name": user,
                "shell": "/bin/bash",
                "lock_passwd": True,
                "sudo": SUDO_ALL,
                "ssh_authorized_keys": [authorized_key.strip()],
            }
        ]
    if lan is not None:
        doc.update(cloud_config(lan))
    return "#cloud-config\n" + yaml.safe_dump(doc, sort_keys=False, default_flow_style=False)


def meta_data(instance_id: str, hostname: str) -> str:
    """NoCloud meta-data: a new instance-id makes cloud-init run its per-instance steps again."""
    return yaml.safe_dump({"instance-id": instance_id, "local-hostname": hostname}, sort_keys=False)


def secret_user_data(
    hostname: str,
    user: str,
    authorized_key: pulumi.Input[str],
    host_private_key: pulumi.Input[str],
    host_public_key: pulumi.Input[str],
    lan: LanNic | None = None,
) -> pulumi.Output[str]:
    """`user_data` from resource outputs, kept secret."""
    rendered: pulumi.Output[str] = pulumi.Output.all(authorized_key, host_private_key, host_public_key).apply(
        lambda a: user_data(hostname, user, str(a[0]), str(a[1]), str(a[2]), lan)
    )
    return pulumi.Output.secret(rendered)
