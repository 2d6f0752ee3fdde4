"""Waiting for a condition with a deadline, in one place."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(check: Callable[[], T], timeout: float, interval: float) -> T:
    """Calls `check` every `interval` seconds until it answers something true or
    `timeout` seconds have passed, and returns its last answer: false means it
    timed out, and the caller says what did not happen. An exception raised by
    `check` ends the wait at once.
    """
    deadline = time.monotonic() + timeout
    while True:
        answer = check()
        if answer or time.monotonic() >= deadline:
            return answer
        time.sleep(interval)
