"""Typed configs: schema dataclasses, ConfigStore registration, validation, composition."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from dalle3.config.schema import RootConfig, validate
from dalle3.config.validate import ConfigError

CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")
"""Absolute path of the YAML tree; the same in a checkout and in an installed wheel."""


def register_resolvers() -> None:
    """Register dalle3's OmegaConf resolvers (idempotent).

    ``${captioner_run:<run>}`` and ``${captioner_export:<run>}`` (``<run>``: ``pretrain``,
    ``ssc`` or ``dsc``) are the run and export folders of a captioner run under
    ``paths.out_dir``, so that the layout is spelled once (:mod:`dalle3.config.captioner`).
    """
    from omegaconf import OmegaConf

    from dalle3.config.captioner import captioner_export, captioner_run_dir

    for name, fn in (("captioner_run", captioner_run_dir), ("captioner_export", captioner_export)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, lambda run, _root_, fn=fn: fn(_root_.paths.out_dir, run))


def register_configs() -> None:
    """Register the schema in Hydra's ConfigStore and the resolvers (idempotent)."""
    from hydra.core.config_store import ConfigStore

    register_resolvers()
    ConfigStore.instance().store(name="root_schema", node=RootConfig)


def compose(overrides: Sequence[str] = (), config_name: str = "config",
            return_hydra_config: bool = False):
    """Compose the real root config outside ``@hydra.main`` (tests, notebooks, the pipeline).

    Args:
        overrides: Hydra overrides such as ``["caption=dsc", "trainer.devices=2"]``.
        config_name: root config file in ``conf/``.
        return_hydra_config: keep the ``hydra`` node (needed for ``${hydra:...}``).
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return hydra_compose(config_name=config_name, overrides=list(overrides),
                             return_hydra_config=return_hydra_config)


__all__ = ["CONF_DIR", "ConfigError", "RootConfig", "compose", "register_configs", "register_resolvers", "validate"]
