"""The latents stage: VAE-encode image shards once into latent shards (see :mod:`dalle3.ldm.data`).

Distributed and resumable through :func:`dalle3.data.offline.run_shard_job`: launch it
on N ranks (torchrun, SLURM tasks, job arrays) and each encodes its own shards; rerun
it and finished shards are skipped. No process group is needed.
"""
from __future__ import annotations

import os
import time
from typing import Any, Optional

import torch
import webdataset as wds
from omegaconf import OmegaConf

from dalle3.config.validate import validate, validate_shards
from dalle3.data.offline import run_shard_job
from dalle3.data.pipeline import build_pipeline
from dalle3.ldm.data import encode_latent_sample
from dalle3.ldm.model import load_vae
from dalle3.ldm.validate import validate_ldm
from dalle3.utils.logging import get_logger

log = get_logger(__name__)


def split_spec(cfg: Any, split: str) -> str:
    """Image shards of a split: ``data.train_shards`` / ``data.val_shards``, else ``<data_dir>/<split>``."""
    return {"train": cfg.data.train_shards, "val": cfg.data.val_shards}.get(split) or \
        os.path.join(cfg.paths.data_dir, split)


@torch.no_grad()
def encode_shard(vae: torch.nn.Module, shard: str, out_path: str, image_size: int, batch_size: int,
                 sidecar_dir: Optional[str] = None) -> dict:
    """Write the latent shard of one image shard to ``out_path``; return ``{"samples", "skipped"}``.

    Captions are copied as the data layer reads them (recaption sidecars joined), so
    the latent shard trains on the same alt/ssc/dsc as its image shard.
    """
    device = next(vae.parameters()).device
    n = skipped = 0
    with wds.TarWriter(out_path) as sink:
        for batch in build_pipeline([shard], image_size=image_size, batch_size=batch_size, mode="once",
                                    sidecar_dir=sidecar_dir):
            skipped += int(batch["n_skipped"])
            moments = vae.encode(batch["image"].to(device, vae.dtype) * 2 - 1).latent_dist.parameters
            for i, key in enumerate(batch["key"]):
                sink.write(encode_latent_sample(key, moments[i], batch["alt"][i], batch["ssc"][i],
                                                batch["dsc"][i], batch["scene"][i]))
                n += 1
    return {"samples": n, "skipped": skipped}


def run(cfg: Any) -> dict:
    """Encode every split in ``ldm.latents.splits`` into ``ldm.latents.out_dir/<split>``."""
    validate(cfg)
    validate_ldm(cfg.ldm)
    specs = {split: validate_shards(f"ldm.latents.splits[{split}]", split_spec(cfg, split))
             for split in cfg.ldm.latents.splits}
    torch.manual_seed(cfg.seed)
    vae = load_vae(cfg.ldm.vae).to("cuda" if torch.cuda.is_available() else "cpu")
    sidecar_dir = OmegaConf.select(cfg, "data.sidecar_dir", default=None)
    t0 = time.time()
    summary: dict[str, Any] = {"out_dir": str(cfg.ldm.latents.out_dir)}
    for split, shards in specs.items():
        out_dir = os.path.join(cfg.ldm.latents.out_dir, split)
        summary[split] = run_shard_job(
            shards, out_dir, lambda src, dst: encode_shard(vae, src, dst, cfg.ldm.image_size, cfg.ldm.latents.batch_size,
                                          sidecar_dir),
            name=f"latents/{split}")
    summary["seconds"] = round(time.time() - t0, 1)
    log.info("latents: %s", summary)
    return summary
