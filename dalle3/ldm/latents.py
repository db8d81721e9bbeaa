"""The latents stage's work: VAE-encode image shards once into latent shards (see :mod:`dalle3.ldm.data`).

Distributed and resumable through :func:`dalle3.data.offline.run_shard_job`: launch it
on N ranks (torchrun, SLURM tasks, job arrays) and each encodes its own shards, one live
process per shard (a lease each, so a requeue beside lingering old ranks is safe); rerun
it and finished shards are skipped if they were made from the same inputs
(:func:`latents_identity`: the image shard's path, size and mtime, its caption sidecar,
the VAE and the image size), and redone otherwise. So latents of the raw world are not
reused for the recaptioned shards of the same base name. No process group is needed.

With ``ldm.latents.precompute_text`` the frozen text encoder also runs here, once per
caption, and its hidden states go into each sample (:func:`dalle3.ldm.data.encode_text_member`);
each shard's manifest entry then says ``"text": true``, which is what the ldm stage
checks before training on them. Shards finished earlier without them are redone.
"""
from __future__ import annotations

import os
from typing import Any, Optional

import torch
import webdataset as wds

from dalle3.data.captions import CAPTION_KINDS
from dalle3.data.offline import completed, forget, input_identity, output_names, path_identity
from dalle3.data.pipeline import build_pipeline
from dalle3.data.shards import assign_shards
from dalle3.data.sidecar import sidecar_name
from dalle3.dist.env import array_task, dist_env
from dalle3.ldm.data import encode_latent_sample, encode_text_member
from dalle3.ldm.text import encode_prompts
from dalle3.utils.logging import get_logger

log = get_logger(__name__)


def split_spec(cfg: Any, split: str) -> str:
    """Image shards of a split: ``data.train_shards`` / ``data.val_shards``, else ``<data_dir>/<split>``."""
    return {"train": cfg.data.train_shards, "val": cfg.data.val_shards}.get(split) or \
        os.path.join(cfg.paths.data_dir, split)


def vae_identity(vae_cfg: Any) -> dict:
    """The VAE the latents come from: its local folder's files (:func:`path_identity`), else its hub name."""
    folder = os.path.join(vae_cfg.pretrained, vae_cfg.subfolder or "") if vae_cfg.pretrained else ""
    if folder and os.path.isdir(folder):
        return path_identity(folder)
    return {"hub": vae_cfg.pretrained, "subfolder": vae_cfg.subfolder}


def latents_identity(shard: str, sidecar_dir: Optional[str], vae: dict, image_size: int) -> dict:
    """What a latent shard depends on (its manifest ``source``): the image shard, its sidecar, the VAE, the size.

    Args:
        vae: :func:`vae_identity` (taken once per run).
    """
    sidecar = path_identity(os.path.join(sidecar_dir, sidecar_name(shard))) if sidecar_dir else None
    return input_identity(shard, sidecar=sidecar, vae=vae, image_size=int(image_size))


@torch.no_grad()
def text_members(tokenizer: Any, encoder: torch.nn.Module, batch: dict) -> list[bytes]:
    """Per sample, its ``text.safetensors`` bytes: the embeddings of ``alt`` and of each non-empty ``ssc``/``dsc``.

    One encoder pass per caption kind over the batch; each row is padded to
    ``max_length`` alone, so it equals the row the training step would encode.
    """
    n = len(batch["key"])
    rows: dict[str, dict[int, torch.Tensor]] = {}
    for kind in CAPTION_KINDS:
        idx = [i for i in range(n) if kind == "alt" or batch[kind][i]]
        if idx:
            rows[kind] = dict(zip(idx, encode_prompts(tokenizer, encoder, [batch[kind][i] for i in idx]).cpu()))
    return [encode_text_member({k: r[i] for k, r in rows.items() if i in r},
                               {k: batch[k][i] for k, r in rows.items() if i in r}) for i in range(n)]


@torch.no_grad()
def encode_shard(vae: torch.nn.Module, shard: str, out_path: str, image_size: int, batch_size: int,
                 sidecar_dir: Optional[str] = None, text_encoder: Optional[tuple] = None) -> dict:
    """Write the latent shard of one image shard to ``out_path``; return ``{"samples", "skipped", "text"}``.

    Captions are copied as the data layer reads them (recaption sidecars joined), so
    the latent shard trains on the same alt/ssc/dsc as its image shard.

    Args:
        text_encoder: ``(tokenizer, encoder)`` to also store text embeddings (:func:`text_members`).
    """
    device = next(vae.parameters()).device
    n = skipped = 0
    with wds.TarWriter(out_path) as sink:
        for batch in build_pipeline([shard], image_size=image_size, batch_size=batch_size, mode="once",
                                    sidecar_dir=sidecar_dir):
            skipped += int(batch["n_skipped"])
            moments = vae.encode(batch["image"].to(device, vae.dtype) * 2 - 1).latent_dist.parameters
            texts = text_members(*text_encoder, batch) if text_encoder else [None] * len(batch["key"])
            for i, key in enumerate(batch["key"]):
                sink.write(encode_latent_sample(key, moments[i], batch["alt"][i], batch["ssc"][i],
                                                batch["dsc"][i], batch["scene"][i], texts[i]))
                n += 1
    return {"samples": n, "skipped": skipped, "text": text_encoder is not None}


def redo_without_text(shards: list, out_dir: str) -> int:
    """Forget this process's finished shards whose manifest entry has no text embeddings; return how many.

    Only this process's own shards (same split as :func:`run_shard_job`), so ranks never
    drop an entry another rank has just rewritten.
    """
    env, task = dist_env(), array_task()
    done, names = completed(out_dir), output_names(shards)
    n = 0
    for shard in assign_shards(shards, env.rank, env.world_size, task.task_id, task.task_count):
        entry = done.get(names[shard])
        if entry is not None and not entry.get("text"):
            forget(out_dir, names[shard])
            n += 1
    return n
