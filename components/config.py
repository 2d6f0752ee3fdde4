"""Reads the stack's raw config values for `load_settings`."""

from __future__ import annotations

import json

import pulumi
from pulumi.runtime.config import CONFIG, get_config_env

from components.settings import KNOWN_KEYS, OBJECT_KEYS, SCALAR_KEYS


def read_raw_config(config: pulumi.Config) -> dict[str, object]:
    """Every known key the stack sets: scalars as strings, objects decoded.

    Values are checked by `load_settings`, which names the key in any error;
    an object key holding text that is not JSON is passed on as that text.
    """
    raw: dict[str, object] = {}
    for key in SCALAR_KEYS:
        value = config.get(key)
        if value is not None:
            raw[key] = value
    for key in OBJECT_KEYS:
        text = config.get(key)
        if text is None:
            continue
        try:
            raw[key] = json.loads(text)
        except json.JSONDecodeError:
            raw[key] = text
    # Keys the program does not read are passed on without their values, so
    # `load_settings` can name them (a typo of `release` would otherwise be ignored).
    prefix = f"{config.name}:"
    for full in {*CONFIG.get(), *get_config_env()}:
        if full.startswith(prefix) and full[len(prefix) :] not in KNOWN_KEYS:
            raw[full[len(prefix) :]] = None
    return raw
