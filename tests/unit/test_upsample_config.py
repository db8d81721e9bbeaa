"""The upsample config group, its stage and its command-line flag, composed from the real root config."""
from __future__ import annotations

from pathlib import Path

import pytest

from dalle3.cli import UPSAMPLE_FLAG, expand_flags
from dalle3.config import CONF_DIR, ConfigError, compose
from dalle3.config.upsample import validate_upsample, validate_upsample_train
from dalle3.stages import get_stage

PRESETS = sorted(p.stem for p in (Path(CONF_DIR) / "upsample").glob("*.yaml"))


def test_stage_upsample_is_registered_and_defaults_to_the_world_lm():
    cfg = compose(["stage=upsample", "paths.out_dir=/tmp/o"])
    assert get_stage("upsample").load().__name__ == "run_upsample"
    assert cfg.upsample.name == "world" and not cfg.upsample.enabled
    assert cfg.upsample.model == "/tmp/o/upsample/export" and cfg.paths.run_dir == "/tmp/o/upsample"
    assert cfg.upsample.generation.temperature == 0.0
    validate_upsample(cfg.upsample)
    validate_upsample_train(cfg.upsample.train)


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_composes_and_validates(preset):
    cfg = compose([f"upsample={preset}"])
    validate_upsample(cfg.upsample)
    assert cfg.upsample.name == preset


def test_real_llm_presets_sample_with_the_readme_settings():
    g = compose(["upsample=qwen2.5-1.5b-instruct"]).upsample
    assert g.model == "Qwen/Qwen2.5-1.5B-Instruct" and g.chat == "auto"
    assert (g.generation.temperature, g.generation.top_p, g.generation.max_new_tokens) == (0.7, 0.9, 160)


def test_the_flag_sets_enabled_and_a_preset_name_still_picks_the_group():
    args = ["prompt=a red circle", "upsample=true", "upsample=zephyr-7b-beta", "upsample.model=/m"]
    assert expand_flags(args, UPSAMPLE_FLAG) == ["prompt=a red circle", "upsample.enabled=true",
                                                  "upsample=zephyr-7b-beta", "upsample.model=/m"]
    cfg = compose(expand_flags(["upsample=True", "upsample=zephyr-7b-beta"], UPSAMPLE_FLAG))
    assert cfg.upsample.enabled and cfg.upsample.model == "HuggingFaceH4/zephyr-7b-beta"


@pytest.mark.parametrize("override, key", [
    ("upsample.generation.top_p=0", "upsample.generation.top_p"),
    ("upsample.generation.temperature=-1", "upsample.generation.temperature"),
    ("upsample.kinds=[dsc]", "upsample.kinds"),
    ("upsample.chat=maybe", "upsample.chat"),
    ("upsample.prompt_template=rewrite", "upsample.prompt_template"),
    ("upsample.guards.min_words=100", "upsample.guards.min_words"),
])
def test_a_bad_value_fails_with_one_line_naming_the_key(override, key):
    with pytest.raises(ConfigError) as err:
        validate_upsample(compose([override]).upsample)
    assert str(err.value).startswith(f"{key}=") and "\n" not in str(err.value)


def test_heads_must_divide_the_width():
    with pytest.raises(ConfigError, match=r"^upsample.train.heads=3 does not divide"):
        validate_upsample_train(compose(["upsample.train.heads=3"]).upsample.train)


def test_the_upsampler_is_not_part_of_an_ldm_runs_identity():
    from dalle3.ldm.run_info import config_hash

    plain = config_hash(compose(["stage=ldm"]))
    assert config_hash(compose(["stage=ldm", "upsample.enabled=true", "upsample=zephyr-7b-beta"])) == plain
    assert config_hash(compose(["stage=ldm", "seed=1"])) != plain


def test_a_missing_local_model_folder_fails_in_one_line(tmp_path):
    from dalle3.upsample import build_upsampler

    cfg = compose([f"paths.out_dir={tmp_path}", "upsample.enabled=true"])
    with pytest.raises(ConfigError, match=r"^upsample.model='.*/upsample/export' is not a folder; allowed: a hub name"):
        build_upsampler(cfg)
