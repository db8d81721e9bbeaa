"""The vae → latents → ldm → generate stages end to end on the CPU, tiny sizes, real root config."""
from __future__ import annotations

import os

import pytest
import torch
from omegaconf import OmegaConf

from dalle3.config import compose
from dalle3.stages import run_stage

pytestmark = pytest.mark.slow


def overrides(world, out, *extra):
    return [f"paths.data_dir={world}", f"paths.out_dir={out}", "world=small32", "data.global_batch_size=16",
            "data.num_workers=0", "data.epoch_samples=256", "data.val_samples=32", "data.shuffle_buffer=64",
            "trainer.progress_bar=false", "trainer.log_every_n_steps=1", "trainer.limit_val_batches=1",
            "trainer.val_check_interval=8", "ldm.sample.every_n_steps=0", *extra]


def run(world, out, *extra):
    cfg = compose(overrides(world, out, *extra))
    OmegaConf.resolve(cfg)
    return cfg, run_stage(cfg)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from dalle3.config.schema import WorldConfig
    from dalle3.world.writer import write_split

    root = tmp_path_factory.mktemp("world")
    wcfg = WorldConfig(image_size=32, max_objects=2)
    write_split(str(root), "train", 256, 64, wcfg, 0, progress=False)
    write_split(str(root), "val", 64, 32, wcfg, 0, progress=False)
    return root


@pytest.fixture(scope="module")
def trained_vae(world, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    cfg, summary = run(world, out, "stage=vae", "trainer.max_steps=12", "ldm.vae_train.lr=2e-3")
    return out, summary


@pytest.fixture(scope="module")
def latents(world, trained_vae):
    out, _ = trained_vae
    cfg, summary = run(world, out, "stage=latents")
    return out, summary


def test_vae_stage_learns_and_saves_a_vae_with_its_scaling_factor(trained_vae):
    out, s = trained_vae
    assert s["global_step"] == 12 and s["loss_ratio"] < 0.8  # the reconstruction loss fell
    assert 5 < s["metrics"]["val/psnr"] < 60
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(s["vae_dir"])
    assert vae.config.scaling_factor == pytest.approx(s["scaling_factor"], rel=1e-4) and s["scaling_factor"] != 0.18215
    assert os.path.getsize(s["recon_png"]) > 0


def test_latents_stage_writes_a_latent_shard_per_image_shard_and_skips_them_on_rerun(world, latents):
    out, s = latents
    assert s["train"]["done"] == 4 and s["train"]["samples"] == 256 and s["val"]["samples"] == 64
    assert sorted(os.listdir(out / "latents" / "train"))[:4] == [f"{i:05d}.tar" for i in range(4)]
    _, again = run(world, out, "stage=latents")
    assert again["train"]["done"] == 0 and again["train"]["skipped"] == 4


@pytest.mark.parametrize("source, ratio", [("alt", 0.95), ("dsc", 0.95), ("blend", 0.5)])
def test_caption_choice_on_latent_shards(world, latents, source, ratio):
    from dalle3.ldm.data import LatentDataModule
    from dalle3.ldm.stage import latent_data_cfg

    out, _ = latents
    cfg = compose(overrides(world, out, "stage=ldm", f"caption={source}", f"caption.ratio={ratio}"))
    OmegaConf.resolve(cfg)
    dm = LatentDataModule(latent_data_cfg(cfg), cfg.caption)
    batches = list(dm.train_dataloader())
    assert batches[0]["latent"].shape == (16, 8, 8, 8)  # mean + logvar of 4x8x8 latents
    kinds = [k for b in batches for k in b["caption_kind"]]
    pairs = [(c, b[k][i]) for b in batches for i, (c, k) in enumerate(zip(b["caption"], b["caption_kind"]))]
    assert all(c == field for c, field in pairs)  # each caption is the field its kind names
    if source == "blend":
        share = sum(k == "dsc" for k in kinds) / len(kinds)
        assert 0.35 < share < 0.65 and set(kinds) == {"alt", "dsc"}
    else:
        assert set(kinds) == {source}


@pytest.fixture(scope="module")
def ldm_run(world, latents):
    out, _ = latents
    cfg, s = run(world, out, "stage=ldm", "caption=dsc", "trainer.max_steps=24", "trainer.ckpt_every_n_steps=12",
                 "ldm.sample.every_n_steps=12", "ldm.sample.steps=4", "ldm.train.warmup_steps=5")
    return cfg, s


def test_ldm_stage_trains_from_latents_and_the_loss_falls(ldm_run):
    cfg, s = ldm_run
    assert s["inputs"] == "latents" and s["global_step"] == 24
    assert s["loss_ratio"] < 0.8, s
    assert s["synthetic_share"] == 1.0  # caption=dsc
    samples = sorted(os.listdir(os.path.join(cfg.paths.run_dir, "samples")))
    assert samples == ["step_0000012.png", "step_0000024.png"]


def test_ldm_run_writes_its_identity_keeps_every_checkpoint_and_two_seeds_are_two_runs(world, latents, ldm_run):
    from dalle3.ldm.run_info import read_run_info

    cfg, s = ldm_run
    info = read_run_info(cfg.paths.run_dir)
    assert s["run_json"] == os.path.join(cfg.paths.run_dir, "run.json")
    assert (info["label"], info["caption_source"], info["synthetic"], info["ratio"]) == ("100% dsc", "dsc", "dsc", None)
    assert (info["shares"], info["seed"], info["steps"]) == ({"alt": 0.0, "ssc": 0.0, "dsc": 1.0}, 0, 24)
    assert len(info["config_hash"]) == 12 and info["captioners"] == {}  # the world's shards: not recaptioned
    ckpts = sorted(os.listdir(os.path.join(cfg.paths.run_dir, "checkpoints")))
    assert ckpts == ["last.ckpt", "step0000012.ckpt", "step0000024.ckpt"]  # intermediate ones are kept
    out, _ = latents
    other = compose(overrides(world, out, "stage=ldm", "caption=dsc", "seed=1"))
    assert other.paths.run_dir != cfg.paths.run_dir and other.paths.run_dir.endswith("dsc_dsc0.95_seed1")
    assert other.ldm.generate.ckpt_dir == other.paths.run_dir
    from dalle3.ldm.run_info import config_hash

    assert config_hash(other) != info["config_hash"]  # the seed decides the model
    assert config_hash(compose(overrides(world, out, "stage=ldm", "caption=dsc", "trainer.max_steps=24",
                                         "trainer.ckpt_every_n_steps=12", "ldm.sample.every_n_steps=12",
                                         "ldm.sample.steps=4", "ldm.train.warmup_steps=5",
                                         "paths.out_dir=/elsewhere"))) == info["config_hash"]


def test_resume_continues_at_the_same_step_with_the_same_ema(world, latents, ldm_run):
    """A second run with more steps restarts at the checkpoint's step and EMA, not from scratch."""
    import lightning.pytorch as pl

    from dalle3.callbacks.ema import EMA
    from dalle3.ldm.model import build_parts
    from dalle3.ldm.module import LatentDiffusionModule
    from dalle3.ldm.stage import latent_data_cfg, ldm_callbacks
    from dalle3.ldm.data import LatentDataModule
    from dalle3.trainer import fit

    cfg, _ = ldm_run
    saved = torch.load(os.path.join(cfg.paths.run_dir, "checkpoints", "last.ckpt"), weights_only=True)
    assert saved["global_step"] == 24

    class Probe(pl.Callback):
        def on_train_start(self, trainer, pl_module):
            ema = next(c for c in trainer.callbacks if isinstance(c, EMA))
            self.step, self.shadow, self.n = trainer.global_step, {k: v.clone() for k, v in ema.shadow.items()}, ema.n_updates

    cfg.trainer.max_steps = 27
    probe = Probe()
    module = LatentDiffusionModule(cfg.ldm, build_parts(cfg.ldm))
    trainer = fit(module, LatentDataModule(latent_data_cfg(cfg), cfg.caption), cfg,
                  callbacks=[*ldm_callbacks(cfg), probe])
    want = saved["callbacks"]["EMA"]
    assert probe.step == 24 and probe.n == want["n_updates"] == 24
    assert all(torch.equal(probe.shadow[k].cpu(), v) for k, v in want["shadow"].items())
    assert trainer.global_step == 27 and len(module.losses) == 3


def test_generate_writes_pngs_from_ema_weights_and_exports_a_diffusers_pipeline(world, ldm_run, tmp_path):
    cfg, _ = ldm_run
    out = cfg.paths.out_dir
    gcfg, s = run(world, out, "stage=generate", "caption=dsc", "ldm.generate.prompt=a red circle",
                  "ldm.generate.n=3", "ldm.generate.steps=4", f"ldm.generate.export_dir={tmp_path}/pipe")
    assert len(s["images"]) == 3 and all(os.path.getsize(p) > 0 for p in s["images"]) and s["step"] >= 24
    from PIL import Image

    assert Image.open(s["grid"]).size[0] > 2 * 32
    # none of our code below: diffusers' own loader and sampler
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(s["pipeline"])
    image = pipe("a red circle", num_inference_steps=4, guidance_scale=3.0, output_type="pt",
                 generator=torch.Generator().manual_seed(0), height=32, width=32).images
    assert image.shape == (1, 3, 32, 32) and torch.isfinite(image).all()
    assert type(pipe.tokenizer).__module__.startswith("transformers") and pipe.safety_checker is None


def test_ldm_stage_trains_on_text_embeddings_stored_by_the_latents_stage(world, trained_vae, tmp_path):
    out, _ = trained_vae
    where = f"ldm.latents.out_dir={tmp_path}/latents"
    _, s = run(world, out, "stage=latents", "ldm.latents.precompute_text=true", where)
    assert s["train"]["samples"] == 256 and s["val"]["samples"] == 64
    cfg, s = run(world, out, "stage=ldm", "caption=blend", "trainer.max_steps=6", "trainer.val_check_interval=3", where,
                 f"paths.run_dir={tmp_path}/run")
    assert s["inputs"] == "latents" and s["text"] == "stored" and s["global_step"] == 6
    assert torch.isfinite(torch.tensor([s["loss_first"], s["loss_last"], s["metrics"]["val/loss"]])).all()
    assert 0.7 < s["synthetic_share"] <= 1.0  # the blend still picks captions (and their embeddings) per sample
