"""An ssh command line, tried again only when the server reset the connection."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Sequence

ATTEMPTS = 5
PAUSE = 3.0


def run_ssh(argv: Sequence[str], stdin: bytes = b"", timeout: float = 900) -> subprocess.CompletedProcess[bytes]:
    """Runs `argv` (an ssh command line) and returns its result.

    An emulated guest's sshd can reset a connection before the key exchange
    (ssh exits 255 saying kex_exchange_identification); no command started
    then, so trying again is safe. Any other result, a refused host key
    included, is returned as it is.
    """
    for _ in range(ATTEMPTS - 1):
        out = subprocess.run(list(argv), input=stdin, capture_output=True, timeout=timeout)
        if out.returncode != 255 or b"kex_exchange_identification" not in out.stderr:
            return out
        time.sleep(PAUSE)
    return subprocess.run(list(argv), input=stdin, capture_output=True, timeout=timeout)
