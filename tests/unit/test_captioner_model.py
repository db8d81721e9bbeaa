"""Building the CoCa, the open_clip 3.3.0 init fix, image-tower options and the export round trip."""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

import open_clip
import pytest
import torch

from dalle3.captioner.export import CONFIG_FILE, WEIGHTS_FILE, export_captioner, export_dir, is_export, load_exported
from dalle3.captioner.model import (build_captioner, freeze_image_trunk, init_text_decoder, load_image_tower,
                                    normalize_images, register_model_config)
from dalle3.config.captioner import CaptionerConfig
from dalle3.config.convert import to_dataclass
from dalle3.captioner.stem import StemSpec
from dalle3.captioner.tokenizer import WordTokenizer
from dalle3.config import compose
from dalle3.config.captioner import captioner_export, captioner_run_dir

SMALL = ["captioner.arch.image_size=32", "captioner.arch.vision_layers=1", "captioner.arch.text_layers=1",
         "captioner.arch.decoder_layers=1", "captioner.arch.attn_pooler_queries=9"]


pytestmark = pytest.mark.usefixtures("one_thread")


def small_cfg(*extra: str):
    return to_dataclass(CaptionerConfig, compose([*SMALL, *extra]).captioner)


def test_tiny_preset_is_a_small_coca_with_the_world_vocabulary():
    cap = build_captioner(to_dataclass(CaptionerConfig, compose([]).captioner))
    assert isinstance(cap.model, open_clip.CoCa) and isinstance(cap.tokenizer, WordTokenizer)
    n_params = sum(p.numel() for p in cap.model.parameters())
    assert 5e5 < n_params < 5e6  # 0.93M: small enough for a CPU, far from 49k-token BPE sizes
    assert cap.model.text_decoder.text_projection.shape[1] == cap.tokenizer.vocab_size
    assert cap.model_name in open_clip.list_models()  # registered with open_clip.add_model_config


def test_tiny_preset_reads_the_64px_world_through_a_conv_stem():
    from dalle3.captioner.generate import CaptionGenerator, DecodeOptions
    from dalle3.captioner.model import model_image_size
    from dalle3.captioner.stem import ConvStem

    cap = build_captioner(to_dataclass(CaptionerConfig, compose([]).captioner))
    assert model_image_size(cap.model) == 64 and isinstance(cap.model.visual.conv1, ConvStem)
    assert cap.model.visual.attn_pool is None  # the decoder attends to every token
    assert not cap.model.visual.positional_embedding.requires_grad  # fixed 2D sin-cos
    world = torch.rand(2, 3, 64, 64)
    _, tokens = cap.model.visual(normalize_images(world))
    assert tokens.shape == (2, 8 * 8, cap.model_cfg["vision_cfg"]["width"])  # the 8 px patch grid, from the stem
    captions = CaptionGenerator(cap.model, cap.tokenizer, DecodeOptions(max_new_tokens=5))(world)
    assert len(captions) == 2 and all(isinstance(c, str) for c in captions)


def test_fresh_model_has_no_nan_and_the_decoder_projection_is_initialised():
    torch.manual_seed(0)
    cap = build_captioner(small_cfg())
    for name, p in cap.model.named_parameters():
        assert torch.isfinite(p).all(), name
    proj = cap.model.text_decoder.text_projection
    width = proj.shape[0]
    assert abs(float(proj.detach().std()) - width ** -0.5) < 0.3 * width ** -0.5  # normal(0, width^-0.5), not torch.empty


def test_init_fix_overwrites_garbage():
    cap = build_captioner(small_cfg())
    dec = cap.model.text_decoder
    with torch.no_grad():
        dec.text_projection.fill_(float("nan"))
    init_text_decoder(dec)
    assert torch.isfinite(dec.text_projection).all()


def test_image_init_from_a_clip_checkpoint_and_freeze(tmp_path):
    from safetensors.torch import save_file

    donor = build_captioner(small_cfg("captioner.arch.stem=patch"))  # a CLIP tower has a patch embedding
    trunk = {f"visual.{k}": v.clone() for k, v in donor.model.visual.state_dict().items()
             if not k.startswith(("attn_pool", "ln_post", "proj"))}
    save_file(trunk, str(tmp_path / "clip.safetensors"))
    with pytest.raises(ValueError, match=r"does not fit the image tower: missing \['conv1.0.weight'"):
        build_captioner(small_cfg(f"captioner.image_init={tmp_path / 'clip.safetensors'}"))  # conv stem
    cap = build_captioner(small_cfg(f"captioner.image_init={tmp_path / 'clip.safetensors'}",
                                    "captioner.freeze_image=true", "captioner.arch.stem=patch"))
    assert torch.equal(cap.model.visual.conv1.weight, donor.model.visual.conv1.weight)
    frozen = {n for n, p in cap.model.visual.named_parameters() if not p.requires_grad}
    assert "conv1.weight" in frozen and not any(n.startswith("attn_pool") for n in frozen)
    with pytest.raises(ValueError, match="does not fit"):
        save_file({"visual.conv1.weight": torch.zeros(3)}, str(tmp_path / "bad.safetensors"))
        load_image_tower(cap.model, str(tmp_path / "bad.safetensors"))


def test_real_presets_compose_with_open_clip_configs():
    for name in ("coca_ViT-B-32", "coca_ViT-L-14"):
        cfg = compose([f"captioner={name}"]).captioner
        assert cfg.model == name and cfg.tokenizer == "open_clip"
        assert open_clip.get_model_config(cfg.model)["multimodal_cfg"]["context_length"] == 76


def test_export_round_trip_with_open_clips_own_loader(tmp_path):
    torch.manual_seed(0)
    cap = build_captioner(small_cfg("captioner.arch.stem=patch"))  # open_clip's own patch embedding
    with torch.no_grad():  # make the weights non-default so a skipped load would show
        for p in cap.model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    out = export_captioner(cap, tmp_path / "export", {"target": "dsc"})
    images = normalize_images(torch.rand(3, 3, 32, 32))
    text = cap.tokenizer(["a red circle in the middle", "two squares", ""])
    cap.model.eval()
    with torch.no_grad():
        want = cap.model(images, text)
        # 1. register the exported config, then open_clip's create_model(name, pretrained=file)
        open_clip.add_model_config(out / f"{cap.model_name}.json")
        direct = open_clip.create_model(cap.model_name, pretrained=str(out / WEIGHTS_FILE)).eval()(images, text)
        # 2. open_clip's local-dir schema reads open_clip_config.json + the safetensors file
        local = open_clip.create_model(f"local-dir:{out}").eval()(images, text)
        # 3. our loader (same open_clip call) brings the tokenizer back too
        loaded = load_exported(out)
        ours = loaded.model(images, text)
    for got in (direct, local, ours):
        for key in want:
            assert torch.equal(want[key], got[key]), key
    assert loaded.tokenizer.vocab == cap.tokenizer.vocab
    assert json.loads((out / CONFIG_FILE).read_text())["model_cfg"] == cap.model_cfg
    assert not list(out.glob("*.pt*")) and not list(out.glob("*.bin"))  # no pickle files


def test_conv_stem_export_round_trip(tmp_path):
    from dalle3.captioner.model import plain_model

    torch.manual_seed(0)
    cap = build_captioner(small_cfg())  # the tiny preset's conv stem
    assert cap.stem == StemSpec((32, 64), "none")
    with torch.no_grad():
        for p in cap.model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    assert not is_export(tmp_path) and not is_export(tmp_path / "export")
    out = export_captioner(cap, export_dir(tmp_path))
    assert out == tmp_path / "export" and is_export(out) and not is_export(tmp_path)
    assert not [p.name for p in out.iterdir() if ".tmp" in p.name]  # the atomic writes left no temporary files
    assert json.loads((out / "captioner.json").read_text())["conv_stem"] == {"channels": [32, 64], "norm": "none"}
    images = normalize_images(torch.rand(3, 3, 32, 32))
    text = cap.tokenizer(["a red circle in the middle", "two squares", ""])
    cap.model.eval()
    with torch.no_grad():
        want = cap.model(images, text)
        loaded = load_exported(out)
        got = loaded.model(images, text)
        copy = plain_model(cap, cap.model.state_dict())(images, text)
    assert loaded.stem == cap.stem
    for key in want:
        assert torch.equal(want[key], got[key]) and torch.equal(want[key], copy[key]), key
    # open_clip's bare loader cannot build the stem, and says so instead of loading half the weights
    open_clip.add_model_config(out / f"{cap.model_name}.json")
    with pytest.raises(RuntimeError, match="conv1"):
        open_clip.create_model(cap.model_name, pretrained=str(out / WEIGHTS_FILE))


def test_export_from_before_stem_norm_loads_with_its_groupnorm_stem(tmp_path):
    # exports written before captioner.arch.stem_norm existed store conv_stem as a bare channel
    # list, and their stems had GroupNorm between the convolutions
    torch.manual_seed(0)
    cap = build_captioner(small_cfg("captioner.arch.stem_norm=group"))
    assert cap.stem == StemSpec((32, 64), "group")
    assert sum(isinstance(m, torch.nn.GroupNorm) for m in cap.model.visual.conv1) == 2
    out = export_captioner(cap, tmp_path / "export")
    meta = json.loads((out / "captioner.json").read_text())
    meta["conv_stem"] = [32, 64]
    (out / "captioner.json").write_text(json.dumps(meta))
    images = normalize_images(torch.rand(2, 3, 32, 32))
    text = cap.tokenizer(["two squares", "a red circle"])
    with torch.no_grad():
        want = cap.model.eval()(images, text)["logits"]
        loaded = load_exported(out)
        assert loaded.stem == StemSpec((32, 64), "group")
        assert torch.equal(loaded.model(images, text)["logits"], want)
    # the stem's layout is checked, not guessed: the same weights do not fit a norm-free stem
    meta["conv_stem"] = {"channels": [32, 64], "norm": "none"}
    (out / "captioner.json").write_text(json.dumps(meta))
    with pytest.raises(RuntimeError, match="conv1"):
        load_exported(out)


def test_register_model_config_overrides_a_previous_registration():
    cfg = dict(open_clip.get_model_config("coca_ViT-B-32"))
    cfg["embed_dim"] = 64
    register_model_config("dalle3_test_registration", cfg)
    assert open_clip.get_model_config("dalle3_test_registration")["embed_dim"] == 64
    cfg["embed_dim"] = 32
    register_model_config("dalle3_test_registration", cfg)
    assert open_clip.get_model_config("dalle3_test_registration")["embed_dim"] == 32


def test_freeze_image_trunk_keeps_pooler_trainable():
    cap = build_captioner(small_cfg())
    freeze_image_trunk(cap.model.visual)
    trainable = {n for n, p in cap.model.visual.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith(("attn_pool", "ln_post", "proj")) for n in trainable)


def test_register_model_config_leaves_no_files(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    cfg = dict(open_clip.get_model_config("coca_ViT-B-32"))
    register_model_config("dalle3_test_no_files", cfg)
    assert open_clip.get_model_config("dalle3_test_no_files") == cfg
    assert list(tmp_path.iterdir()) == []
    register_model_config("dalle3_test_no_files_2", cfg)   # a rescan skips the removed file
    assert open_clip.get_model_config("dalle3_test_no_files") == cfg


def test_export_dir_is_the_configs_export_folder(tmp_path):
    run_dir = captioner_run_dir(str(tmp_path), "ssc")
    assert export_dir(run_dir) == Path(captioner_export(str(tmp_path), "ssc"))
    assert not is_export(run_dir)
