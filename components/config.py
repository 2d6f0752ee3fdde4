"""Reads the stack's raw config values for `load_settings`."""

from __future__ import annotations

import pulumi

from components.settings import KNOWN_KEYS


def read_raw_config(config: pulumi.Config) -> dict[str, object]:
    """Plain values of every known key that the stack sets (JSON-decoded)."""
    raw: dict[str, object] = {}
    for key in KNOWN_KEYS:
        value = config.get_object(key)
        if value is not None:
            raw[key] = value
    return raw
