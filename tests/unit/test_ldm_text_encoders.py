"""``ldm.text_encoder.kind=open_clip``: an open_clip text tower converted to a transformers CLIPTextModel."""
from __future__ import annotations

import json
import random

import pytest
import torch
from omegaconf import OmegaConf

from dalle3.config import ConfigError, compose
from dalle3.ldm.model import build_parts, build_vae
from dalle3.ldm.text import encode_prompts, load_or_create_text_encoder
from dalle3.config.ldm import validate_ldm

TINY = "dalle3-test-text"
TINY_QUICK = "dalle3-test-text-quickgelu"


@pytest.fixture(scope="module")
def open_clip_weights(tmp_path_factory):
    """Two tiny open_clip CLIP configs (GELU and QuickGELU), registered, with random weights as safetensors."""
    import open_clip
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("open_clip")
    vision = {"image_size": 16, "layers": 1, "width": 16, "patch_size": 8, "head_width": 8}
    base = {"embed_dim": 16, "vision_cfg": vision,
            "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 3}}
    (root / f"{TINY}.json").write_text(json.dumps(base))
    (root / f"{TINY_QUICK}.json").write_text(json.dumps({**base, "quick_gelu": True}))
    open_clip.add_model_config(root)
    weights = {}
    for seed, name in enumerate((TINY, TINY_QUICK)):
        torch.manual_seed(seed)
        model = open_clip.create_model(name)
        weights[name] = str(root / f"{name}.safetensors")
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, weights[name])
    return weights


def ldm_cfg(tmp_path, *overrides):
    cfg = compose([f"paths.out_dir={tmp_path}", *overrides])
    OmegaConf.resolve(cfg)
    return cfg.ldm


def open_clip_overrides(weights, name=TINY, layer="last"):
    return ["ldm.text_encoder.kind=open_clip", f"ldm.text_encoder.pretrained={name}:{weights[name]}",
            f"ldm.text_encoder.layer={layer}", "ldm.text_encoder.max_length=16"]


def world_captions(n=100):
    from dalle3.config.schema import WorldConfig
    from dalle3.world.captions import make_captions
    from dalle3.world.scene import sample_scene

    rng, wcfg = random.Random(7), WorldConfig(alt_colour_rate=0.5)
    return [t for _ in range(n) for t in make_captions(sample_scene(rng, wcfg), rng, wcfg).values()]


@pytest.mark.parametrize("name, layer", [(TINY, "last"), (TINY_QUICK, "penultimate")])
def test_converted_tower_gives_open_clips_own_per_token_features(open_clip_weights, tmp_path, name, layer):
    import open_clip

    cfg = ldm_cfg(tmp_path, *open_clip_overrides(open_clip_weights, name, layer))
    tokenizer, encoder = load_or_create_text_encoder(cfg.text_encoder)
    assert encoder.config.hidden_act == ("quick_gelu" if name == TINY_QUICK else "gelu")
    assert encoder.config.num_hidden_layers == (3 if layer == "last" else 2)
    reference = open_clip.create_model(name, pretrained=open_clip_weights[name]).eval()
    texts = ["a red circle", "", "two large blue squares in the top left and a sign that says hello"]
    ids = open_clip.get_tokenizer(name)(texts)  # [3, 16], open_clip's padding and truncation
    with torch.no_grad():
        if layer == "last":  # open_clip's encode_text, read after its ln_final
            seen = []
            hook = reference.ln_final.register_forward_hook(lambda m, i, out: seen.append(out))
            reference.encode_text(ids)
            hook.remove()
            want = seen[0]
        else:  # ln_final of the second-to-last block, as Stable Diffusion 2 conditions
            want = reference.forward_intermediates(text=ids, text_indices=2, normalize_intermediates=True,
                                                   intermediates_only=True)["text_intermediates"][0]
        got = encoder(ids)[0]
    assert got.shape == (3, 16, 32)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    # and from the prompts, through our tokenizer and encode_prompts (the training/sampling path)
    torch.testing.assert_close(encode_prompts(tokenizer, encoder, texts), want, atol=1e-5, rtol=0)


def test_bpe_tokenizer_gives_open_clips_ids_on_the_world_captions(open_clip_weights):
    import open_clip

    from dalle3.ldm.open_clip_text import bpe_tokenizer

    texts = world_captions() + ["naïve café, 3.5 o'clock", "IMG_4711.JPG  a  Photo"]
    ours = bpe_tokenizer(16)(texts, padding="max_length", max_length=16, truncation=True,
                            return_tensors="pt").input_ids
    assert torch.equal(ours, open_clip.get_tokenizer(TINY)(texts))
    long = bpe_tokenizer(16)(["word " * 40], truncation=True, max_length=16).input_ids[0]
    assert len(long) == 16 and long[-1] == 49407  # truncated, still ends in <|endoftext|>


def test_converted_encoder_is_saved_once_and_a_stale_folder_fails_with_one_line(open_clip_weights, tmp_path):
    cfg = ldm_cfg(tmp_path, *open_clip_overrides(open_clip_weights))
    tok1, enc1 = load_or_create_text_encoder(cfg.text_encoder)
    tok2, enc2 = load_or_create_text_encoder(cfg.text_encoder)  # from cfg.text_encoder.path now
    assert torch.equal(encode_prompts(tok1, enc1, ["a red circle"]), encode_prompts(tok2, enc2, ["a red circle"]))
    for other in (OmegaConf.merge(cfg.text_encoder, {"layer": "penultimate"}),
                  OmegaConf.merge(cfg.text_encoder, {"kind": "clip", "pretrained": None})):
        with pytest.raises(ConfigError) as err:
            load_or_create_text_encoder(other)
        assert "ldm.text_encoder.path" in str(err.value) and "\n" not in str(err.value)


def test_ldm_with_an_open_clip_text_tower_trains_a_step_and_exports(open_clip_weights, tmp_path):
    from diffusers import StableDiffusionPipeline

    from dalle3.ldm.export import export_pipeline
    from dalle3.ldm.module import LatentDiffusionModule

    cfg = ldm_cfg(tmp_path, *open_clip_overrides(open_clip_weights, layer="penultimate"))
    validate_ldm(cfg)
    torch.manual_seed(0)
    parts = build_parts(cfg, vae=build_vae(cfg.vae, cfg.image_size))
    assert parts.unet.config.cross_attention_dim == 32  # the tower's width
    module = LatentDiffusionModule(cfg, parts)
    opt = module.configure_optimizers()["optimizer"]
    before = {k: v.clone() for k, v in parts.unet.state_dict().items()}
    batch = {"image": torch.rand(4, 3, 32, 32), "caption": ["a red circle", "a blue square", "", "a sign"]}
    loss = module.diffusion_loss(batch, dropout=0.5)
    loss.backward()
    opt.step()
    assert torch.isfinite(loss) and loss > 0
    assert any(not torch.equal(before[k], v) for k, v in parts.unet.state_dict().items())
    assert all(p.grad is None for p in parts.text_encoder.parameters())  # frozen
    folder = export_pipeline(str(tmp_path / "pipe"), unet=parts.unet, vae=parts.vae, text_encoder=parts.text_encoder,
                             tokenizer=parts.tokenizer, noise_cfg=cfg.noise)
    pipe = StableDiffusionPipeline.from_pretrained(folder)
    prompt_embeds = pipe.encode_prompt("a red circle", "cpu", 1, False)[0]
    torch.testing.assert_close(prompt_embeds, encode_prompts(parts.tokenizer, parts.text_encoder, ["a red circle"]))


@pytest.mark.parametrize("override, key", [
    ("ldm.text_encoder.kind=bert", "open_clip"),  # the allowed list names the new kind
    ("ldm.text_encoder.layer=middle", "ldm.text_encoder.layer"),
    ("ldm.text_encoder.pretrained=null", "ldm.text_encoder.pretrained"),
])
def test_bad_open_clip_values_fail_with_one_line(tmp_path, override, key):
    cfg = ldm_cfg(tmp_path, "ldm.text_encoder.kind=open_clip", "ldm.text_encoder.pretrained=ViT-B-32:openai", override)
    with pytest.raises(ConfigError) as err:
        validate_ldm(cfg)
    assert key in str(err.value) and "\n" not in str(err.value)


def test_open_clip_spec_without_weights_fails_with_one_line():
    from dalle3.ldm.open_clip_text import parse_pretrained

    assert parse_pretrained("ViT-H-14:laion2b_s32b_b79k") == ("ViT-H-14", "laion2b_s32b_b79k")
    assert parse_pretrained("ViT-B-32:/models/w.safetensors") == ("ViT-B-32", "/models/w.safetensors")
    assert parse_pretrained("hf-hub:laion/CLIP-ViT-H-14-laion2B-s32B-b79K")[1] is None
    with pytest.raises(ConfigError, match="ldm.text_encoder.pretrained='ViT-H-14'; allowed"):
        parse_pretrained("ViT-H-14")


def test_sd2_preset_composes_with_an_open_clip_vit_h_tower(tmp_path):
    cfg = ldm_cfg(tmp_path, "ldm=sd2")
    validate_ldm(cfg)
    te = cfg.text_encoder
    assert (te.kind, te.pretrained, te.layer, te.max_length) == ("open_clip", "ViT-H-14:laion2b_s32b_b79k",
                                                                 "penultimate", 77)
    assert te.path != ldm_cfg(tmp_path).text_encoder.path  # never the tiny encoder's folder


def test_a_max_length_beyond_the_saved_encoders_positions_fails_with_one_line(tmp_path):
    base = ["ldm.text_encoder.hidden_size=16", "ldm.text_encoder.num_heads=2", "ldm.text_encoder.num_layers=1",
            f"ldm.text_encoder.path={tmp_path}/te"]
    tokenizer, _ = load_or_create_text_encoder(compose([*base, "ldm.text_encoder.max_length=16"]).ldm.text_encoder)
    assert tokenizer.model_max_length == 16
    shorter, _ = load_or_create_text_encoder(compose([*base, "ldm.text_encoder.max_length=8"]).ldm.text_encoder)
    assert shorter.model_max_length == 8  # the saved folder wins; fewer tokens fit its positions
    with pytest.raises(ConfigError, match=r"ldm\.text_encoder\.max_length=32 is more than the 16 positions"):
        load_or_create_text_encoder(compose([*base, "ldm.text_encoder.max_length=32"]).ldm.text_encoder)
