"""The four stages of the ldm package: vae, latents, ldm and generate (build → run → write).

* ``stage=vae`` trains the tiny AutoencoderKL and saves it (with its measured latent
  scaling factor) to ``ldm.vae.pretrained``.
* ``stage=latents`` VAE-encodes the image shards once into latent shards
  (:mod:`dalle3.ldm.latents`).
* ``stage=ldm`` trains the U-Net on latent shards when ``ldm.train.use_latents`` and they
  exist, else on images encoded on the fly; on the text embeddings stored in the latent
  shards when ``ldm.train.use_text_cache`` and every shard has them, else on captions
  encoded in each step.
* ``stage=generate`` samples PNGs from a run's EMA weights (:mod:`dalle3.ldm.generate`).
"""
from __future__ import annotations

import os
import time
from typing import Any

import lightning as L
import torch
from omegaconf import OmegaConf

from dalle3.callbacks.data_stats import DataStats
from dalle3.config.ldm import validate_ldm
from dalle3.config.schema import validate
from dalle3.data.shards import validate_shards
from dalle3.utils.logging import get_logger

log = get_logger(__name__)


def _summary(trainer: Any, module: Any, t0: float) -> dict:
    from dalle3.ldm.module import loss_fell

    metrics = {k: round(float(v), 5) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
    return {"run_dir": str(trainer.default_root_dir), "global_step": trainer.global_step, "rank": trainer.global_rank,
            "world_size": trainer.world_size, "steps_run": len(module.losses), "loss_first": round(module.losses[0], 5) if module.losses else None,
            "loss_last": round(module.losses[-1], 5) if module.losses else None,
            "loss_ratio": round(loss_fell(module.losses), 4) if len(module.losses) > 1 else None,
            "metrics": metrics, "seconds": round(time.time() - t0, 1)}


def run_vae(cfg: Any) -> dict:
    """Train the tiny VAE; save it to ``ldm.vae.pretrained`` with ``scaling_factor`` = 1/std(latents)."""
    from dalle3.data.datamodule import ShardDataModule
    from dalle3.ldm.vae import VAEModule, latent_scaling_factor
    from dalle3.trainer import fit

    validate(cfg)
    validate_ldm(cfg.ldm)
    validate_shards("data.train_shards", cfg.data.train_shards)
    L.seed_everything(cfg.seed, workers=True)
    t0 = time.time()
    module = VAEModule(cfg.ldm)
    datamodule = ShardDataModule(cfg.data, cfg.caption, seed=cfg.seed)
    trainer = fit(module, datamodule, cfg)
    summary = _summary(trainer, module, t0)
    if trainer.is_global_zero:
        vae = module.vae.eval()
        vae.register_to_config(scaling_factor=latent_scaling_factor(vae, datamodule.val_dataloader()))
        out = cfg.ldm.vae.pretrained
        vae.save_pretrained(out)
        summary.update(vae_dir=str(out), scaling_factor=round(vae.config.scaling_factor, 5))
        summary["recon_png"] = _save_reconstructions(vae, datamodule, os.path.join(cfg.paths.run_dir, "recon.png"))
    return summary


@torch.no_grad()
def _save_reconstructions(vae: Any, datamodule: Any, path: str, n: int = 8) -> str:
    """Originals (top row) over reconstructions (bottom row) of ``n`` val images."""
    from dalle3.ldm.sample import image_grid, to_pil

    images = next(iter(datamodule.val_dataloader()))["image"][:n].to(vae.device)
    recon = (vae.decode(vae.encode(images * 2 - 1).latent_dist.mode()).sample / 2 + 0.5).clamp(0, 1)
    to_pil(image_grid(torch.cat([images, recon]).cpu(), nrow=len(images))).save(path)
    return path


def run_latents(cfg: Any) -> dict:
    """Encode every split in ``ldm.latents.splits`` into ``ldm.latents.out_dir/<split>``.

    A finished latent shard is skipped only if it was made from the same image shard,
    sidecar, VAE and image size (:func:`dalle3.ldm.latents.latents_identity`); the
    summary's ``redone_input_changed`` counts the others, redone now.
    """
    from dalle3.data.offline import run_shard_job
    from dalle3.ldm.latents import encode_shard, latents_identity, redo_without_text, split_spec, vae_identity
    from dalle3.ldm.model import load_vae
    from dalle3.ldm.text import load_or_create_text_encoder

    validate(cfg)
    validate_ldm(cfg.ldm)
    specs = {split: validate_shards(f"ldm.latents.splits[{split}]", split_spec(cfg, split))
             for split in cfg.ldm.latents.splits}
    torch.manual_seed(cfg.seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    vae = load_vae(cfg.ldm.vae).to(device)
    text_encoder = None
    if cfg.ldm.latents.precompute_text:
        tokenizer, encoder = load_or_create_text_encoder(cfg.ldm.text_encoder)
        text_encoder = (tokenizer, encoder.to(device))
    sidecar_dir, vae_id, size = cfg.data.sidecar_dir, vae_identity(cfg.ldm.vae), cfg.ldm.image_size
    t0 = time.time()
    summary: dict[str, Any] = {"out_dir": str(cfg.ldm.latents.out_dir)}
    for split, shards in specs.items():
        out_dir = os.path.join(cfg.ldm.latents.out_dir, split)
        redone = redo_without_text(shards, out_dir) if text_encoder else 0
        summary[split] = run_shard_job(
            shards, out_dir, lambda src, dst: encode_shard(vae, src, dst, cfg.ldm.image_size,
                                                           cfg.ldm.latents.batch_size, sidecar_dir, text_encoder),
            name=f"latents/{split}", identity=lambda src: latents_identity(src, sidecar_dir, vae_id, size),
            lease_timeout_s=float(cfg.ldm.latents.lease_timeout_s))
        summary[split]["redone_for_text"] = redone
    summary["seconds"] = round(time.time() - t0, 1)
    log.info("latents: %s", summary)
    return summary


def latent_data_cfg(cfg: Any) -> Any:
    """``cfg.data`` pointed at the latent shards, or ``None`` when images must be encoded on the fly."""
    root = cfg.ldm.latents.out_dir
    train, val = os.path.join(root, "train"), os.path.join(root, "val")
    if not cfg.ldm.train.use_latents or not os.path.isdir(train) or not any(
            f.endswith(".tar") for f in os.listdir(train)):
        return None
    data = OmegaConf.to_container(cfg.data, resolve=True)
    data.update(train_shards=train, val_shards=val if os.path.isdir(val) else "")
    return data


def text_cache_ready(cfg: Any) -> bool:
    """Whether ldm training reads stored text embeddings: ``ldm.train.use_text_cache`` and every
    latent shard (train, and val if present) has them by its manifest entry."""
    from dalle3.data.offline import completed

    if not cfg.ldm.train.use_text_cache:
        return False
    for split in ("train", "val"):
        folder = os.path.join(cfg.ldm.latents.out_dir, split)
        names = [f for f in os.listdir(folder) if f.endswith(".tar")] if os.path.isdir(folder) else []
        done = completed(folder) if names else {}
        if (split == "train" and not names) or not all(done.get(n, {}).get("text") for n in names):
            return False
    return True


def check_text_cache(datamodule: Any, tokenizer: Any, encoder: torch.nn.Module) -> None:
    """Fail with one line if the stored embeddings are not the configured encoder's (first usable train sample)."""
    from dalle3.config.validate import ConfigError
    from dalle3.ldm.data import PickTextEmbedding, build_latent_pipeline
    from dalle3.ldm.text import encode_prompts

    shard = datamodule.train_dataset().shards[:1]
    batch = next(iter(build_latent_pipeline(shard, text=True, caption=datamodule.caption_cfg, batch_size=1,
                                            sample_transform=PickTextEmbedding(), sidecar_dir=datamodule.sidecar_dir)),
                 None)
    if batch is None:  # nothing usable in that shard: training reports the skipped samples
        return
    stored, fresh = batch["context"].float(), encode_prompts(tokenizer, encoder, batch["caption"]).cpu()
    if stored.shape != fresh.shape or not torch.allclose(stored, fresh, rtol=1e-2, atol=1e-2):
        raise ConfigError(f"ldm.latents.precompute_text: the embeddings in {datamodule.data_cfg.train_shards} were "
                          "made by another text encoder; allowed: rerun stage=latents into a fresh "
                          "ldm.latents.out_dir, or ldm.train.use_text_cache=false")


def ldm_callbacks(cfg: Any) -> list:
    """EMA (if ``ema_decay`` > 0), sample images (if ``sample.every_n_steps`` > 0), data statistics."""
    from dalle3.callbacks.ema import EMA
    from dalle3.ldm.sample_images import SampleImages

    t, s = cfg.ldm.train, cfg.ldm.sample
    callbacks: list = [DataStats()]
    if t.ema_decay > 0:
        callbacks.append(EMA(t.ema_decay, t.ema_every_n_steps, target="unet"))
    if s.every_n_steps > 0:
        callbacks.append(SampleImages(list(s.prompts), s.every_n_steps, s.guidance, s.steps, s.seed,
                                      os.path.join(cfg.paths.run_dir, "samples")))
    return callbacks


def run_ldm(cfg: Any) -> dict:
    """Train the text-to-image U-Net; returns the loss summary and where checkpoints went."""
    from dalle3.data.datamodule import ShardDataModule
    from dalle3.dist.zero import rank_memory
    from dalle3.ldm.data import LatentDataModule
    from dalle3.ldm.model import build_parts
    from dalle3.ldm.module import LatentDiffusionModule
    from dalle3.ldm.run_info import check_same_run, run_info, write_run_info
    from dalle3.trainer import fit

    validate(cfg)
    validate_ldm(cfg.ldm)
    L.seed_everything(cfg.seed, workers=True)
    t0 = time.time()
    parts = build_parts(cfg.ldm)
    module = LatentDiffusionModule(cfg.ldm, parts)
    latent_data = latent_data_cfg(cfg)
    text = latent_data is not None and text_cache_ready(cfg)
    if latent_data is not None:
        datamodule = LatentDataModule(latent_data, cfg.caption, seed=cfg.seed, text=text)
        if text:
            check_text_cache(datamodule, parts.tokenizer, parts.text_encoder)
    else:
        validate_shards("data.train_shards", cfg.data.train_shards)
        log.info("no latent shards under %s: encoding images on the fly", cfg.ldm.latents.out_dir)
        datamodule = ShardDataModule(cfg.data, cfg.caption, seed=cfg.seed)
    info = run_info(cfg, step=0)
    clash = check_same_run(cfg.paths.run_dir, info)
    if clash:
        log.warning("%s; this run resumes it all the same (trainer.resume=%s)", clash, cfg.trainer.resume)
    trainer = fit(module, datamodule, cfg, callbacks=ldm_callbacks(cfg))
    summary = _summary(trainer, module, t0)
    if trainer.is_global_zero:
        summary["run_json"] = write_run_info(cfg.paths.run_dir, {**info, "steps": int(trainer.global_step)})
    summary["inputs"] = "latents" if latent_data is not None else "images"
    summary["text"] = "stored" if text else "encoded"
    summary["rank_memory"] = rank_memory(trainer)  # elements held by this rank (ZeRO shrinks them)
    stats = next((c.last for c in trainer.callbacks if isinstance(c, DataStats)), {})
    summary["synthetic_share"] = stats.get("synthetic_share")
    summary["synthetic_fallback_alt"] = stats.get("synthetic_fallback_alt")
    return summary


def run_generate(cfg: Any) -> dict:
    """Write ``<run_dir>/<prompt>_<i>.png`` and ``grid.png``; export the pipeline; return the paths."""
    from dalle3.ldm.export import export_pipeline
    from dalle3.ldm.generate import generate_batched, generate_settings, load_trained_parts, slug
    from dalle3.ldm.model import build_sampler
    from dalle3.ldm.sample import image_grid, to_pil

    validate_ldm(cfg.ldm)
    s = generate_settings(cfg)
    t0 = time.time()
    parts, ckpt = load_trained_parts(cfg, cfg.ldm.generate.use_ema)
    n = int(s["n"])
    out_dir = cfg.paths.run_dir
    os.makedirs(out_dir, exist_ok=True)
    text = upsampled_prompt(cfg, s, parts.tokenizer, out_dir) if cfg.upsample.enabled else s["prompt"]
    images = generate_batched(parts, build_sampler(cfg.ldm.noise), [text] * n, guidance=float(s["guidance"]),
                              steps=int(s["steps"]), seed=int(s["seed"]), batch_size=n)
    files = []
    for i, image in enumerate(images):
        files.append(os.path.join(out_dir, f"{slug(s['prompt'])}_{i}.png"))
        to_pil(image).save(files[-1])
    grid = os.path.join(out_dir, "grid.png")
    to_pil(image_grid(images)).save(grid)
    summary = {"images": files, "grid": grid, "step": ckpt.get("global_step"), **s}
    if cfg.ldm.generate.export_dir:
        summary["pipeline"] = export_pipeline(cfg.ldm.generate.export_dir, unet=parts.unet.cpu(),
                                              vae=parts.vae.cpu(), text_encoder=parts.text_encoder.cpu(),
                                              tokenizer=parts.tokenizer, noise_cfg=cfg.ldm.noise)
    summary["seconds"] = round(time.time() - t0, 1)
    return summary


def upsampled_prompt(cfg: Any, settings: dict, encoder_tokenizer: Any, out_dir: str) -> str:
    """``upsample=true``: the upsampler's description of the prompt (or the prompt, on a fallback), written to
    ``<out_dir>/prompt.txt`` beside the images and into ``settings`` (the summary the command prints)."""
    from dalle3.upsample import build_upsampler

    item = build_upsampler(cfg).upsample([settings["prompt"]], encoder_tokenizer=encoder_tokenizer).items[0]
    settings.update(upsampled_prompt=item.text, upsample_fallback=item.fallback)
    with open(os.path.join(out_dir, "prompt.txt"), "w") as f:
        f.write(f"prompt: {item.prompt}\nupsampled: {item.text}\n"
                + (f"fallback: {item.fallback} ({item.detail})\n" if item.fallback else ""))
    log.info("upsampled prompt: %s%s", item.text, f" (fallback: {item.fallback})" if item.fallback else "")
    return item.text
