"""The shared value checks that every config module builds its ``validate_<section>`` from.

Each config module validates the sections it defines (``config/world.py`` the world,
``config/ldm.py`` the ldm block, ``config/schema.py`` the shared blocks ...), and each
stage calls them before any heavy work. Every failure is a :class:`ConfigError` whose
message is one line naming the key, the bad value and what is allowed.
"""
from __future__ import annotations

from typing import Any, Iterable


class ConfigError(ValueError):
    """A bad config value; ``str(err)`` is a single line for the user."""


def check_choice(key: str, value: Any, allowed: Iterable[str]) -> None:
    allowed = tuple(allowed)
    if value not in allowed:
        raise ConfigError(f"{key}={value!r} is not allowed; choose one of: {' | '.join(map(str, allowed))}")


def check_range(key: str, value: float, lo: float, hi: float) -> None:
    if not (lo <= value <= hi):
        raise ConfigError(f"{key}={value!r} is out of range; allowed: [{lo}, {hi}]")


def check_positive(key: str, value: int) -> None:
    if value is None or value <= 0:
        raise ConfigError(f"{key}={value!r} must be a positive integer")


def per_device_batch(global_batch: int, world_size: int, key: str = "data.global_batch_size") -> int:
    """Split the global batch over ranks; it must divide evenly."""
    check_positive(key, global_batch)
    if global_batch % world_size:
        raise ConfigError(f"{key}={global_batch} is not divisible by the world size {world_size} "
                          f"(trainer.devices x trainer.num_nodes); allowed: a multiple of {world_size}")
    return global_batch // world_size
