"""stage=text_encoder: a world CLIP's text tower as the ldm's frozen text encoder (``kind=world_clip``)."""
from __future__ import annotations

import os
import re

import pytest
import torch
from omegaconf import OmegaConf

from dalle3.config import ConfigError, compose
from dalle3.ldm.text import encode_prompts, load_or_create_text_encoder
from tests.unit.test_ldm_text_encoders import world_captions


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """A randomly initialised world CLIP (the judge's architecture, 2 text blocks), exported and converted."""
    from dalle3.captioner.export import export_captioner
    from dalle3.eval.module import build_judge
    from dalle3.eval.text_encoder import convert_world_clip

    cfg = compose(["eval.judge.arch.text_layers=2", "eval.judge.arch.context_length=40"])
    torch.manual_seed(0)
    clip = build_judge(cfg.eval.judge)
    root = tmp_path_factory.mktemp("clip")
    export = export_captioner(clip, root / "export", {"role": "text_encoder"})
    return convert_world_clip(export, root / "converted"), clip


def world_cfg(tmp_path, folder, *extra):
    cfg = compose([f"paths.out_dir={tmp_path}", "ldm.text_encoder.kind=world_clip",
                   f"ldm.text_encoder.pretrained={folder}", "ldm.text_encoder.max_length=40", *extra])
    OmegaConf.resolve(cfg)
    return cfg.ldm


def test_tokenizer_gives_the_world_tokenizers_ids(converted, tmp_path):
    from dalle3.eval.text_encoder import WORD_PATTERN
    from dalle3.world import vocab

    assert WORD_PATTERN == vocab._TOKEN.pattern  # the same cut as split_words
    folder, clip = converted
    tokenizer, _ = load_or_create_text_encoder(world_cfg(tmp_path, folder).text_encoder)
    texts = world_captions(40) + ["", "an unknown zebra, 12 of them!", " ".join(["red"] * 60)]
    got = tokenizer(texts, padding="max_length", max_length=40, truncation=True, return_tensors="pt").input_ids
    assert torch.equal(got, clip.tokenizer(texts, 40))


def test_converted_tower_gives_the_clips_own_per_token_features(converted, tmp_path):
    folder, clip = converted
    tokenizer, encoder = load_or_create_text_encoder(world_cfg(tmp_path, folder).text_encoder)
    assert encoder.config.num_hidden_layers == 2 and all(not p.requires_grad for p in encoder.parameters())
    texts = ["a red circle in the top left", "", "two large blue squares and a sign that says hello"]
    model = clip.model.eval()
    seen = []
    hook = model.ln_final.register_forward_hook(lambda m, i, out: seen.append(out))
    with torch.no_grad():
        model.encode_text(clip.tokenizer(texts, 40))
    hook.remove()
    torch.testing.assert_close(encode_prompts(tokenizer, encoder, texts), seen[0], atol=1e-5, rtol=0)


def test_a_trained_ldm_step_and_the_diffusers_export_use_it(converted, tmp_path):
    from diffusers import StableDiffusionPipeline

    from dalle3.ldm.export import export_pipeline
    from dalle3.ldm.model import build_parts, build_vae
    from dalle3.ldm.module import LatentDiffusionModule

    cfg = world_cfg(tmp_path, converted[0])
    torch.manual_seed(0)
    parts = build_parts(cfg, vae=build_vae(cfg.vae, cfg.image_size))
    module = LatentDiffusionModule(cfg, parts)
    loss = module.diffusion_loss({"image": torch.rand(2, 3, 32, 32), "caption": ["a red circle", ""]}, dropout=0.0)
    loss.backward()
    assert torch.isfinite(loss) and all(p.grad is None for p in parts.text_encoder.parameters())
    folder = export_pipeline(str(tmp_path / "pipe"), unet=parts.unet, vae=parts.vae, text_encoder=parts.text_encoder,
                             tokenizer=parts.tokenizer, noise_cfg=cfg.noise)
    pipe = StableDiffusionPipeline.from_pretrained(folder)
    embeds = pipe.encode_prompt("a red circle in the middle", "cpu", 1, False)[0]
    torch.testing.assert_close(embeds, encode_prompts(parts.tokenizer, parts.text_encoder,
                                                      ["a red circle in the middle"]))


def test_bad_world_clip_values_fail_with_one_line(converted, tmp_path):
    from dalle3.config.ldm import validate_ldm
    from dalle3.eval.text_encoder import convert_world_clip

    with pytest.raises(ConfigError, match=re.escape("ldm.text_encoder.pretrained is not set for kind=world_clip")):
        validate_ldm(world_cfg(tmp_path, "null"))
    with pytest.raises(ConfigError, match="max_length=64") as err:  # beyond the CLIP's 40 positions
        load_or_create_text_encoder(world_cfg(tmp_path, converted[0], "ldm.text_encoder.max_length=64").text_encoder)
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="not a CLIP export") as err:
        convert_world_clip(tmp_path / "nothing", tmp_path / "out")
    assert "\n" not in str(err.value) and not (tmp_path / "out").exists()


def test_eval_refuses_a_run_that_conditions_on_the_judges_own_text_tower(tmp_path):
    from dalle3.eval.stage import check_not_judged_by_own_eyes

    judge = OmegaConf.create(OmegaConf.to_container(compose([f"paths.out_dir={tmp_path}"]).eval.judge, resolve=True))
    own = {"ldm": {"text_encoder": {"kind": "world_clip", "pretrained": str(tmp_path / "judge" / "export")}}}
    with pytest.raises(ConfigError, match="own text tower") as err:
        check_not_judged_by_own_eyes("outputs/ldm/x", own, judge)
    assert "\n" not in str(err.value)
    other = {"ldm": {"text_encoder": {"kind": "world_clip", "pretrained": str(tmp_path / "text_encoder" / "converted")}}}
    check_not_judged_by_own_eyes("outputs/ldm/y", other, judge)


def test_stage_text_encoder_trains_exports_and_converts_a_clip_the_ldm_reads(tmp_path):
    """A few steps of `dalle3-train stage=text_encoder` on the smoke world, then the ldm's encoder from its folder."""
    from dalle3.eval.text_encoder import source_export
    from dalle3.stages import run_stage

    data = tmp_path / "world"
    base = [f"paths.out_dir={tmp_path / 'out'}", f"paths.data_dir={data}", "experiment=smoke", "datagen.workers=1"]
    run_stage(compose([*base, "stage=world"]))
    cfg = compose([*base, "stage=text_encoder", "trainer.max_steps=3", "trainer.progress_bar=false",
                   "ldm.text_encoder.clip.val_samples=16"])
    summary = run_stage(cfg)
    assert summary["train_shards"] == str(data / "train") and summary["validation"]["pairs"] == 16
    folder = summary["converted"]
    assert folder == os.path.join(str(tmp_path / "out" / "text_encoder"), "converted")
    assert source_export(folder) == os.path.realpath(summary["export"])
    te = world_cfg(tmp_path, folder, "ldm.text_encoder.max_length=64").text_encoder
    tokenizer, encoder = load_or_create_text_encoder(te)
    assert encode_prompts(tokenizer, encoder, ["a red circle"]).shape == (1, 64, 64)
