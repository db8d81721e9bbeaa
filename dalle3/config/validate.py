"""Value checks that run before any heavy work.

Every failure is a :class:`ConfigError` whose message is one line naming the key,
the bad value and what is allowed.
"""
from __future__ import annotations

from typing import Any, Iterable

from dalle3.config.schema import CAPTION_SOURCES, DSC_ORDERS, IMAGE_FORMATS, SYNTHETIC_SOURCES


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


def validate_caption(cfg: Any, key: str = "caption") -> None:
    check_choice(f"{key}.source", cfg.source, CAPTION_SOURCES)
    check_choice(f"{key}.synthetic", cfg.synthetic, SYNTHETIC_SOURCES)
    check_range(f"{key}.ratio", cfg.ratio, 0.0, 1.0)


def validate_world(cfg: Any, key: str = "world") -> None:
    check_choice(f"{key}.image_size", cfg.image_size, (32, 64))
    check_choice(f"{key}.image_format", cfg.image_format, IMAGE_FORMATS)
    check_choice(f"{key}.dsc_order", cfg.dsc_order, DSC_ORDERS)
    if not 1 <= cfg.min_objects <= cfg.max_objects <= 9:
        raise ConfigError(f"{key}.min_objects={cfg.min_objects}, {key}.max_objects={cfg.max_objects}: "
                          "allowed: 1 <= min_objects <= max_objects <= 9")
    for name in ("sign_rate", "alt_wrong_count_rate", "alt_wrong_position_rate", "alt_colour_rate",
                 "alt_noise_rate", "alt_empty_rate"):
        check_range(f"{key}.{name}", getattr(cfg, name), 0.0, 1.0)


def validate_trainer(cfg: Any, key: str = "trainer") -> int:
    """Check the trainer block and return the world size it implies."""
    check_choice(f"{key}.accelerator", cfg.accelerator, ("cpu", "gpu", "cuda", "auto"))
    check_choice(f"{key}.strategy", cfg.strategy, ("auto", "ddp", "deepspeed"))
    check_positive(f"{key}.devices", cfg.devices)
    check_positive(f"{key}.num_nodes", cfg.num_nodes)
    if cfg.strategy == "deepspeed":
        check_choice(f"{key}.zero_stage", cfg.zero_stage, (1, 2, 3))
    return cfg.devices * cfg.num_nodes


def validate_shards(key: str, spec: str) -> list[str]:
    """Expand a shard spec and fail if it names nothing that exists."""
    from dalle3.data.shards import expand_shards

    try:
        shards = expand_shards(spec)
    except FileNotFoundError as exc:
        raise ConfigError(f"{key}={spec!r}: {exc}") from None
    if not shards:
        raise ConfigError(f"{key}={spec!r} matches no shards; allowed: a folder of .tar files, a glob, "
                          "a brace pattern, a list file or pipe: URLs")
    return shards


def validate(cfg: Any, *, need_train_shards: bool = False, need_val_shards: bool = False) -> None:
    """Validate a composed root config (DictConfig or dataclass). Raises :class:`ConfigError`."""
    validate_world(cfg.world)
    validate_caption(cfg.caption)
    world_size = validate_trainer(cfg.trainer)
    per_device_batch(cfg.data.global_batch_size, world_size)
    check_positive("datagen.shard_size", cfg.datagen.shard_size)
    if need_train_shards:
        validate_shards("data.train_shards", cfg.data.train_shards)
    if need_val_shards:
        validate_shards("data.val_shards", cfg.data.val_shards)
