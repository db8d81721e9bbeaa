"""The real root config composes, and bad values fail with one line naming the key."""
from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from dalle3.config import CONF_DIR, ConfigError, compose, validate
from dalle3.config.validate import per_device_batch
from dalle3.data.shards import validate_shards

EXPERIMENTS = sorted(p.stem for p in (Path(CONF_DIR) / "experiment").glob("*.yaml"))


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_composes_and_validates(name):
    cfg = compose([f"experiment={name}"])
    OmegaConf.resolve(cfg)
    validate(cfg)
    assert cfg.stage


def test_caption_groups_set_the_source():
    for source in ("alt", "ssc", "dsc", "blend"):
        assert compose([f"caption={source}"]).caption.source == source
    cfg = compose(["caption=blend", "caption.ratio=0.8", "caption.synthetic=ssc"])
    assert (cfg.caption.ratio, cfg.caption.synthetic) == (0.8, "ssc")


def test_unknown_key_is_rejected_at_composition():
    with pytest.raises(Exception, match="caption.rato|rato"):
        compose(["caption.rato=0.5"])


@pytest.mark.parametrize("override, key, allowed", [
    ("caption.source=web", "caption.source", "alt | ssc | dsc | blend"),
    ("caption.synthetic=alt", "caption.synthetic", "ssc | dsc"),
    ("caption.ratio=1.5", "caption.ratio", "[0.0, 1.0]"),
    ("caption.ratio=-0.1", "caption.ratio", "[0.0, 1.0]"),
    ("world.image_size=48", "world.image_size", "32 | 64"),
    ("world.dsc_order=random", "world.dsc_order", "reading | shuffled"),
    ("trainer.strategy=fsdp", "trainer.strategy", "auto | ddp | deepspeed"),
])
def test_bad_values_fail_with_one_line_naming_key_and_allowed(override, key, allowed):
    cfg = compose([override])
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    msg = str(err.value)
    assert "\n" not in msg and key in msg and allowed in msg


def test_global_batch_must_divide_world_size():
    cfg = compose(["data.global_batch_size=63", "trainer.devices=2"])
    with pytest.raises(ConfigError, match=r"data.global_batch_size=63 .*world size 2"):
        validate(cfg)
    assert per_device_batch(64, 4) == 16


def test_missing_shard_path_names_the_key(tmp_path):
    with pytest.raises(ConfigError) as err:
        validate_shards("data.train_shards", str(tmp_path / "nowhere" / "shard-{000..003}.tar"))
    assert "data.train_shards" in str(err.value) and "\n" not in str(err.value)
    cfg = compose([f"paths.data_dir={tmp_path}/missing"])
    with pytest.raises(ConfigError, match="data.train_shards"):
        validate_shards("data.train_shards", cfg.data.train_shards)
