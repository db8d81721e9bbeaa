"""Latent shards: what the latents stage writes and the ldm stage reads instead of images.

A latent shard mirrors its image shard, sample for sample: ``{key}.latent.npy`` (the
VAE posterior's moments, mean and log-variance stacked on the channel axis, float16,
read with ``allow_pickle=False``), ``{key}.txt`` (alt-text) and ``{key}.json``
(``ssc``, ``dsc``, ``scene``). Captions are picked at load time by the data layer's
:class:`~dalle3.data.captions.PickCaption`, so ``caption=alt|ssc|dsc|blend`` works the
same on latents as on images.

Reading reuses the data layer's stages and rank/worker layout
(:class:`~dalle3.data.datamodule.ShardDataModule`); only the decode stage differs.
"""
from __future__ import annotations

import io
import json
from typing import Any, Iterable, Sequence

import numpy as np
import torch
import webdataset as wds

from dalle3.data.datamodule import ShardDataModule
from dalle3.data.decode import decode_json, decode_text
from dalle3.data.loader import ShardDataset
from dalle3.data.pipeline import build_pipeline
from dalle3.data.skips import BadSample

LATENT_MEMBERS = frozenset(("latent.npy", "txt", "ssc.txt", "dsc.txt", "json"))


def encode_latent_sample(key: str, moments: torch.Tensor, alt: str, ssc: str, dsc: str, scene_json: str) -> dict:
    """One latent-shard sample for ``wds.TarWriter`` (moments stored as float16)."""
    buf = io.BytesIO()
    np.save(buf, moments.detach().cpu().to(torch.float16).numpy(), allow_pickle=False)
    meta = {"ssc": ssc, "dsc": dsc, "scene": json.loads(scene_json) if scene_json else None}
    return {"__key__": key, "latent.npy": buf.getvalue(), "txt": alt.encode(), "json": json.dumps(meta).encode()}


def decode_latent_sample(raw: dict) -> dict:
    """Raw latent-shard sample → ``{key, latent: FloatTensor[2C,h,w], alt, ssc, dsc, scene_json}``."""
    if "latent.npy" not in raw:
        raise BadSample("no_image", "no latent.npy member")
    try:
        latent = torch.from_numpy(np.load(io.BytesIO(raw["latent.npy"]), allow_pickle=False).astype(np.float32))
    except ValueError as exn:
        raise BadSample("bad_image", f"latent.npy: {exn}") from None
    meta = decode_json(raw["json"]) if "json" in raw else {}
    ssc = decode_text(raw["ssc.txt"]) if "ssc.txt" in raw else (meta.get("ssc") or "")
    dsc = decode_text(raw["dsc.txt"]) if "dsc.txt" in raw else (meta.get("dsc") or "")
    scene = meta.get("scene")
    return {"key": raw["__key__"], "url": raw.get("__url__", ""), "latent": latent,
            "alt": decode_text(raw["txt"]) if "txt" in raw else "", "ssc": ssc, "dsc": dsc,
            "scene_json": "" if scene is None else json.dumps(scene)}


def build_latent_pipeline(shards: Sequence[str], **options: Any) -> wds.DataPipeline:
    """:func:`dalle3.data.pipeline.build_pipeline` decoding latent shards (same arguments).

    Recaption sidecars join by shard name, which latent shards share with their image shards.
    """
    return build_pipeline(shards, **options, decode_fn=decode_latent_sample, keep=LATENT_MEMBERS)


class LatentShardDataset(ShardDataset):
    """A :class:`ShardDataset` whose pipeline decodes latent shards."""

    def build(self, **kwargs: Any) -> Iterable[dict]:
        return build_latent_pipeline(self.shards, **kwargs, **self.options)


class LatentDataModule(ShardDataModule):
    """:class:`ShardDataModule` over latent shards: same rank split, epoch length and blend.

    ``data.train_shards`` / ``data.val_shards`` should point at the latent folders
    (``ldm.latents.out_dir``/train, /val); the ldm stage sets them.
    """

    def _build_train(self, rank: int, world: int) -> ShardDataset:
        return _as_latent(super()._build_train(rank, world))

    def _build_val(self, rank: int, world: int) -> ShardDataset:
        return _as_latent(super()._build_val(rank, world))


def _as_latent(dataset: ShardDataset) -> LatentShardDataset:
    return LatentShardDataset(dataset.shards, n_batches=dataset.n_batches, epoch=dataset.epoch, **dataset.options)
