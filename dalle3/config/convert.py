"""One converter from any config form to a typed config dataclass."""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, TypeVar

T = TypeVar("T")


def to_dataclass(cls: type[T], cfg: Any, **overrides: Any) -> T:
    """A plain, picklable ``cls`` (nested config dataclasses included) from itself, an OmegaConf
    node (interpolations resolved inside its root, so ``${paths.out_dir}`` works), a dict or any
    object with the fields as attributes.

    Fields that ``cfg`` does not have keep ``cls``'s defaults; ``overrides`` win over both.
    Values are type-checked against ``cls`` by OmegaConf.
    """
    from omegaconf import DictConfig, OmegaConf

    if isinstance(cfg, cls):
        return dataclasses.replace(cfg, **overrides) if overrides else cfg
    if isinstance(cfg, DictConfig):
        values = OmegaConf.to_container(cfg, resolve=True)
    elif dataclasses.is_dataclass(cfg):
        values = dataclasses.asdict(cfg)
    elif isinstance(cfg, Mapping):
        values = cfg
    else:
        values = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cls) if hasattr(cfg, f.name)}
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(cls), values, overrides))
