"""The LDM's parts: tiny builders, pretrained loading from local folders, losses, sampling."""
from __future__ import annotations

import random

import pytest
import torch
from omegaconf import OmegaConf

from dalle3.config import ConfigError, compose
from dalle3.ldm import losses
from dalle3.ldm.model import build_noise_scheduler, build_parts, build_sampler, build_vae
from dalle3.ldm.sample import generate, image_grid
from dalle3.ldm.text import build_tiny_text_encoder, encode_prompts, load_or_create_text_encoder
from dalle3.config.ldm import validate_ldm


def ldm_cfg(tmp_path, *overrides):
    cfg = compose([f"paths.out_dir={tmp_path}", *overrides])
    OmegaConf.resolve(cfg)
    return cfg.ldm


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    cfg = ldm_cfg(tmp_path_factory.mktemp("tiny"))
    torch.manual_seed(0)
    return cfg, build_parts(cfg, vae=build_vae(cfg.vae, cfg.image_size))


def test_tiny_parts_have_the_documented_sizes_and_shapes(tiny):
    cfg, parts = tiny
    n_unet = sum(p.numel() for p in parts.unet.parameters())
    n_vae = sum(p.numel() for p in parts.vae.parameters())
    assert 0.3e6 < n_unet < 2e6 and 0.3e6 < n_vae < 2e6
    image = torch.rand(2, 3, 32, 32) * 2 - 1
    latents = parts.vae.encode(image).latent_dist.sample()
    assert latents.shape == (2, 4, 8, 8)  # 32 px, 4x VAE: 8x8x4 latents
    ctx = encode_prompts(parts.tokenizer, parts.text_encoder, ["a red circle", "two blue squares"])
    assert ctx.shape == (2, cfg.text_encoder.max_length, cfg.text_encoder.hidden_size)
    out = parts.unet(latents, torch.tensor([10, 900]), encoder_hidden_states=ctx).sample
    assert out.shape == latents.shape
    # only the U-Net trains
    assert not any(p.requires_grad for p in parts.text_encoder.parameters())
    assert not any(p.requires_grad for p in parts.vae.parameters())
    assert all(p.requires_grad for p in parts.unet.parameters())


def test_word_tokenizer_covers_the_world_captions(tiny):
    from dalle3.config.schema import WorldConfig
    from dalle3.world.captions import make_captions
    from dalle3.world.scene import sample_scene

    _, parts = tiny
    tok = parts.tokenizer
    rng, wcfg = random.Random(123), WorldConfig()
    unk = total = 0
    for _ in range(200):
        caps = make_captions(sample_scene(rng, wcfg), rng, wcfg)
        for kind in ("ssc", "dsc"):
            ids = tok(caps[kind]).input_ids
            unk += ids.count(tok.unk_token_id)
            total += len(ids)
    assert unk == 0 and total > 0
    ids = tok("A RED circle").input_ids
    assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id and tok.unk_token_id not in ids


def test_text_features_tell_colours_apart(tiny):
    _, parts = tiny
    a, b, a2 = encode_prompts(parts.tokenizer, parts.text_encoder, ["a red circle", "a blue circle", "a red circle"])
    assert torch.allclose(a, a2) and (a - b).abs().max() > 1e-3


def test_tiny_text_encoder_is_saved_once_and_reloaded_identically(tmp_path):
    cfg = ldm_cfg(tmp_path).text_encoder
    tok1, enc1 = load_or_create_text_encoder(cfg)
    cfg2 = OmegaConf.merge(cfg, {"seed": 99})  # a different seed must not matter once saved
    tok2, enc2 = load_or_create_text_encoder(cfg2)
    x1 = encode_prompts(tok1, enc1, ["a green triangle"])
    x2 = encode_prompts(tok2, enc2, ["a green triangle"])
    assert torch.equal(x1, x2)
    _, fresh = build_tiny_text_encoder(cfg2, words=["red"])
    assert not torch.equal(fresh.get_input_embeddings().weight[:4],
                           enc1.get_input_embeddings().weight[:4])


def test_an_encoder_folder_another_rank_saved_first_is_kept(tmp_path):
    from dalle3.ldm.text import _save_once

    first = tmp_path / "encoder"
    first.mkdir()
    (first / "first.txt").write_text("first")
    tokenizer, encoder = build_tiny_text_encoder(ldm_cfg(tmp_path).text_encoder, words=["red"])
    _save_once(str(first), tokenizer, encoder, {"kind": "tiny"})
    assert [p.name for p in first.iterdir()] == ["first.txt"]
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


def test_sd15_preset_loads_every_part_from_a_local_folder(tiny, tmp_path):
    """The real preset's code path: parts saved in Stable Diffusion's layout, loaded by folder."""
    _, parts = tiny
    root = tmp_path / "sd"
    parts.tokenizer.save_pretrained(root / "tokenizer")
    parts.text_encoder.save_pretrained(root / "text_encoder")
    parts.vae.save_pretrained(root / "vae")
    parts.unet.save_pretrained(root / "unet")
    cfg = ldm_cfg(tmp_path, "ldm=sd15", f"ldm.pretrained={root}", "ldm.image_size=32",
                  "ldm.text_encoder.max_length=64")
    loaded = build_parts(cfg)
    for name in ("unet", "vae", "text_encoder"):
        want, got = getattr(parts, name).state_dict(), getattr(loaded, name).state_dict()
        assert all(torch.equal(want[k], got[k]) for k in want), name
    assert loaded.tokenizer("a red circle").input_ids == parts.tokenizer("a red circle").input_ids


def test_t5_text_encoder_loads_from_a_local_folder(tiny, tmp_path):
    from transformers import T5Config, T5EncoderModel

    _, parts = tiny
    folder = tmp_path / "t5"
    T5EncoderModel(T5Config(vocab_size=len(parts.tokenizer), d_model=32, d_kv=8, d_ff=64, num_layers=1,
                            num_heads=2)).save_pretrained(folder)
    parts.tokenizer.save_pretrained(folder)
    cfg = ldm_cfg(tmp_path, "ldm.text_encoder.kind=t5", f"ldm.text_encoder.pretrained={folder}")
    tok, enc = load_or_create_text_encoder(cfg.text_encoder)
    assert type(enc).__name__ == "T5EncoderModel" and not any(p.requires_grad for p in enc.parameters())
    assert encode_prompts(tok, enc, ["a red circle"]).shape == (1, 64, 32)


def test_v_prediction_target_and_min_snr_weights(tiny, tmp_path):
    cfg = ldm_cfg(tmp_path, "ldm.noise.prediction_type=v_prediction")
    sched = build_noise_scheduler(cfg.noise)
    x0, noise = torch.randn(3, 4, 8, 8), torch.randn(3, 4, 8, 8)
    t = torch.tensor([1, 500, 999])
    v = losses.diffusion_target(sched, x0, noise, t)
    a = sched.alphas_cumprod[t].view(-1, 1, 1, 1)
    assert torch.allclose(v, a.sqrt() * noise - (1 - a).sqrt() * x0, atol=1e-5)
    w = losses.min_snr_weights(sched, t, gamma=5.0)
    s = losses.snr(sched, t)
    assert torch.allclose(w, torch.clamp(s, max=5.0) / (s + 1))
    eps_sched = build_noise_scheduler(ldm_cfg(tmp_path).noise)
    w_eps = losses.min_snr_weights(eps_sched, t, gamma=5.0)
    assert w_eps[0] < 0.01 and w_eps[-1] == pytest.approx(1.0)  # clean steps are down-weighted


def test_offset_noise_shifts_channel_means():
    x = torch.zeros(256, 4, 8, 8)
    g = torch.Generator().manual_seed(0)
    plain = losses.sample_noise(x, 0.0, g).mean(dim=(2, 3)).std()
    offset = losses.sample_noise(x, 0.5, g).mean(dim=(2, 3)).std()
    assert offset > 3 * plain


@pytest.mark.parametrize("sampler", ["ddim", "dpm"])
def test_samplers_produce_images(tiny, sampler):
    cfg, parts = tiny
    images = generate(parts.unet, parts.vae, parts.tokenizer, parts.text_encoder, build_sampler(cfg.noise, sampler),
                      ["a red circle", "a blue square"], guidance=3.0, steps=4, seed=0)
    assert images.shape == (2, 3, 32, 32) and 0 <= images.min() and images.max() <= 1
    again = generate(parts.unet, parts.vae, parts.tokenizer, parts.text_encoder, build_sampler(cfg.noise, sampler),
                     ["a red circle", "a blue square"], guidance=3.0, steps=4, seed=0)
    assert torch.equal(images, again)  # seeded
    assert image_grid(images).shape == (3, 32 + 4, 2 * 32 + 6)


@pytest.mark.parametrize("override, key", [
    ("ldm.noise.prediction_type=x0", "ldm.noise.prediction_type"),
    ("ldm.noise.sampler=euler", "ldm.noise.sampler"),
    ("ldm.train.caption_dropout=1.5", "ldm.train.caption_dropout"),
    ("ldm.latents.lease_timeout_s=0", "ldm.latents.lease_timeout_s"),
    ("ldm.image_size=30", "ldm.image_size"),
    ("ldm.text_encoder.kind=bert", "ldm.text_encoder.kind"),
])
def test_bad_ldm_values_fail_with_one_line(tmp_path, override, key):
    with pytest.raises(ConfigError) as err:
        validate_ldm(ldm_cfg(tmp_path, override))
    assert key in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("overrides", [["ldm=sd15"], ["ldm=t5xxl"], ["experiment=ldm_smoke"], ["experiment=ldm_vpred"],
                                       ["experiment=ldm_zero3"], ["stage=ldm"], ["stage=generate"]])
def test_ldm_presets_and_experiments_compose_and_validate(tmp_path, overrides):
    cfg = ldm_cfg(tmp_path, *overrides)
    validate_ldm(cfg)
    assert cfg.image_size % 2 ** (len(cfg.vae.block_out_channels) - 1) == 0


def test_ldm_runs_of_different_captions_get_different_folders(tmp_path):
    dirs = set()
    for caption in ("caption=alt", "caption=blend", "caption.ratio=0.65"):
        cfg = compose([f"paths.out_dir={tmp_path}", "stage=ldm", caption])
        dirs.add(OmegaConf.to_container(cfg.paths, resolve=True)["run_dir"])
    assert len(dirs) == 3


def test_pooled_text_unet_sees_the_prompt_through_its_timestep_embedding(tmp_path):
    """``ldm.unet.pooled_text``: the prompt's mean feature enters every ResNet block, in training and sampling."""
    from dalle3.ldm.model import takes_pooled_text, unet_text_inputs
    from dalle3.ldm.module import LatentDiffusionModule

    cfg = ldm_cfg(tmp_path, "ldm.unet.pooled_text=true")
    torch.manual_seed(0)
    parts = build_parts(cfg, vae=build_vae(cfg.vae, cfg.image_size))
    assert takes_pooled_text(parts.unet) and not takes_pooled_text(build_parts(
        ldm_cfg(tmp_path), vae=build_vae(cfg.vae, cfg.image_size)).unet)
    ctx = encode_prompts(parts.tokenizer, parts.text_encoder, ["a red circle", "two blue squares"])
    inputs = unet_text_inputs(parts.unet, ctx)
    assert torch.allclose(inputs["class_labels"], ctx.mean(dim=1))
    # with cross-attention cut off (a zero projection), only the pooled path carries the prompt
    from diffusers.models.transformers.transformer_2d import Transformer2DModel

    blocks = [m for m in parts.unet.modules() if isinstance(m, Transformer2DModel)]
    assert blocks
    for block in blocks:
        torch.nn.init.zeros_(block.proj_out.weight)
        torch.nn.init.zeros_(block.proj_out.bias)
    x, t = torch.randn(1, 4, 8, 8).repeat(2, 1, 1, 1), torch.tensor([500, 500])
    out = parts.unet(x, t, **inputs).sample
    assert not torch.allclose(out[0], out[1])  # the two prompts still give two predictions
    module = LatentDiffusionModule(cfg, parts)
    loss = module.diffusion_loss({"image": torch.rand(2, 3, 32, 32), "caption": ["a red circle", "a cat"]}, 0.0)
    loss.backward()
    assert parts.unet.class_embedding.linear_1.weight.grad.abs().sum() > 0
    images = generate(parts.unet, parts.vae, parts.tokenizer, parts.text_encoder, build_sampler(cfg.noise),
                      ["a red circle"], guidance=3.0, steps=2, seed=0)
    assert images.shape == (1, 3, 32, 32)
