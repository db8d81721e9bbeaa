"""Text embeddings stored in latent shards (``ldm.latents.precompute_text``) and training on them."""
from __future__ import annotations

import os

import pytest
import torch
import webdataset as wds
from omegaconf import OmegaConf

from dalle3.config import ConfigError, compose


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from dalle3.config.schema import WorldConfig
    from dalle3.world.writer import write_split

    root = tmp_path_factory.mktemp("world")
    write_split(str(root), "train", 48, 24, WorldConfig(image_size=32, max_objects=2), 0, progress=False)
    return root


def make_cfg(world, out, *extra):
    cfg = compose([f"paths.data_dir={world}", f"paths.out_dir={out}", "world=small32", "stage=latents",
                   "data.global_batch_size=8", "data.num_workers=0", "data.epoch_samples=48", "data.val_shards=",
                   "data.shuffle_buffer=0", "ldm.latents.splits=[train]", "ldm.latents.batch_size=16", *extra])
    OmegaConf.resolve(cfg)
    return cfg


@pytest.fixture(scope="module")
def latents(world, tmp_path_factory, one_thread):
    """The latents stage run twice: without text embeddings, then with them (the shards are redone)."""
    from dalle3.ldm.model import build_vae
    from dalle3.ldm.stage import run_latents as run, text_cache_ready

    out = tmp_path_factory.mktemp("out")
    cfg = make_cfg(world, out)
    torch.manual_seed(0)
    build_vae(cfg.ldm.vae, 32).save_pretrained(cfg.ldm.vae.pretrained)
    plain = run(cfg)
    ready_before = text_cache_ready(cfg)
    cfg = make_cfg(world, out, "ldm.latents.precompute_text=true")
    with_text = run(cfg)
    return cfg, plain, ready_before, with_text


def datamodule(cfg, text=True, caption="blend"):
    from dalle3.ldm.data import LatentDataModule
    from dalle3.ldm.stage import latent_data_cfg

    cfg = OmegaConf.merge(cfg, {"caption": {"source": caption, "ratio": 0.5}})
    return LatentDataModule(latent_data_cfg(cfg), cfg.caption, text=text)


def test_shards_written_without_text_are_redone_with_it_and_only_then_used(latents):
    from dalle3.ldm.stage import text_cache_ready

    cfg, plain, ready_before, with_text = latents
    assert plain["train"]["done"] == 2 and not ready_before
    assert with_text["train"]["redone_for_text"] == 2 and with_text["train"]["done"] == 2
    assert text_cache_ready(cfg)
    assert not text_cache_ready(OmegaConf.merge(cfg, {"ldm": {"train": {"use_text_cache": False}}}))


def test_stored_embedding_is_the_encoders_output_for_the_delivered_caption(latents):
    from dalle3.ldm.text import encode_prompts, load_or_create_text_encoder

    cfg, *_ = latents
    tokenizer, encoder = load_or_create_text_encoder(cfg.ldm.text_encoder)
    batches = list(datamodule(cfg).train_dataloader())
    kinds = {k for b in batches for k in b["caption_kind"]}
    assert kinds == {"alt", "dsc"}  # the blend delivered both, so both were looked up
    for batch in batches:
        assert batch["context"].dtype == torch.float16 and "text_emb" not in batch
        fresh = encode_prompts(tokenizer, encoder, batch["caption"])
        torch.testing.assert_close(batch["context"].float(), fresh, rtol=2e-3, atol=2e-3)  # fp16 storage
        other = encode_prompts(tokenizer, encoder, [b if k == "alt" else a for a, b, k in
                                                    zip(batch["alt"], batch["dsc"], batch["caption_kind"])])
        assert (batch["context"].float() - other).abs().amax(dim=(1, 2)).min() > 1e-2  # not the other kind's


def test_a_step_on_stored_embeddings_has_the_loss_of_encoding_on_the_fly(latents):
    from dalle3.ldm.model import build_parts
    from dalle3.ldm.module import LatentDiffusionModule

    cfg, *_ = latents
    torch.manual_seed(0)
    module = LatentDiffusionModule(cfg.ldm, build_parts(cfg.ldm))
    stored = next(iter(datamodule(cfg).train_dataloader()))
    plain = {k: v for k, v in stored.items() if k != "context"}
    for dropout in (0.0, 0.5):  # 0.5: some rows take the empty prompt, encoded once
        torch.manual_seed(1)
        loss_stored = module.diffusion_loss(stored, dropout)
        torch.manual_seed(1)
        loss_plain = module.diffusion_loss(plain, dropout)
        torch.manual_seed(1)
        loss_shuffled = module.diffusion_loss({**stored, "context": stored["context"].roll(1, 0)}, dropout)
        gap = abs(loss_stored.item() - loss_plain.item())
        # same loss up to float16 storage; another caption's embedding moves it far more
        assert gap < 1e-5 and abs(loss_shuffled.item() - loss_plain.item()) > 10 * gap


def test_samples_without_a_usable_embedding_are_skipped_and_counted(latents, tmp_path):
    from dalle3.callbacks.data_stats import batch_counts, summarize
    from dalle3.ldm.data import TEXT_MEMBER, build_latent_pipeline

    cfg, *_ = latents
    src = os.path.join(cfg.ldm.latents.out_dir, "train", "00000.tar")
    bad = str(tmp_path / "00000.tar")
    with wds.TarWriter(bad) as sink:
        for i, raw in enumerate(wds.WebDataset(src, shardshuffle=False)):
            raw = {k: v for k, v in raw.items() if k != "__url__" and k != "__local_path__"}
            if i == 0:
                del raw[TEXT_MEMBER]  # missing
            elif i == 1:
                raw["json"] = raw["json"].replace(b'"dsc": "', b'"dsc": "a new caption, ')  # recaptioned since
            elif i == 2:
                raw[TEXT_MEMBER] = raw[TEXT_MEMBER][:100]  # truncated
            sink.write(raw)
    caption = OmegaConf.create({"source": "dsc", "synthetic": "dsc", "ratio": 0.95, "seed": 0})
    batches = list(build_latent_pipeline([bad], text=True, caption=caption, image_size=32, batch_size=8,
                                         mode="once", partial=True))
    assert sum(len(b["key"]) for b in batches) == 21
    assert sum(int(b["n_skipped"]) for b in batches) == 3
    reasons = [r for b in batches for r in b["skipped"]["reason"]]
    assert reasons == ["no_text_embedding"] * 3
    assert summarize(sum(batch_counts(b) for b in batches))["skip/no_text_embedding"] == 3
    # without text=True the same shard reads in full (the embeddings are not even read)
    plain = list(build_latent_pipeline([bad], caption=caption, image_size=32, batch_size=8, mode="once"))
    assert sum(len(b["key"]) for b in plain) == 24 and "context" not in plain[0]


def test_embeddings_of_another_encoder_fail_with_one_line(latents):
    from dalle3.ldm.stage import check_text_cache
    from dalle3.ldm.text import build_tiny_text_encoder, load_or_create_text_encoder

    cfg, *_ = latents
    check_text_cache(datamodule(cfg), *load_or_create_text_encoder(cfg.ldm.text_encoder))  # the right one passes
    other = OmegaConf.merge(cfg.ldm.text_encoder, {"seed": 1})
    tokenizer, encoder = build_tiny_text_encoder(other)
    with pytest.raises(ConfigError) as err:
        check_text_cache(datamodule(cfg), tokenizer, encoder)
    assert "ldm.latents.precompute_text" in str(err.value) and "\n" not in str(err.value)
