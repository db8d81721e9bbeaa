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
import os
from itertools import islice
from typing import Any, Iterable, Iterator, Optional, Sequence

import numpy as np
import torch
import webdataset as wds

from dalle3.data.captions import PickCaption
from dalle3.data.datamodule import ShardDataModule
from dalle3.data.decode import decode_json, decode_text
from dalle3.data.loader import ShardDataset
from dalle3.data.pipeline import (Batch, MapSamples, Shuffle, ShardSource, StrideSamples, TakeSamples, quota,
                                  worker_slot)
from dalle3.data.sidecar import JoinSidecar
from dalle3.data.tarstream import TarSamples
from dalle3.data.skips import BadSample, SkipLog

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


class DecodeLatent:
    """Pipeline stage: decode latent samples; skip, count and report the bad ones."""

    def __init__(self, skips: SkipLog):
        self.skips = skips

    def __call__(self, samples: Iterable[dict]) -> Iterator[dict]:
        for raw in samples:
            try:
                sample = decode_latent_sample(raw)
            except BadSample as bad:
                self.skips.record(raw.get("__key__", "?"), bad.reason, bad.detail, raw.get("__url__"))
                continue
            self.skips.n_good += 1
            yield sample


def build_latent_pipeline(shards: Sequence[str], *, caption: Any = None, batch_size: Optional[int] = None,
                          mode: str = "once", shuffle_buffer: int = 0, seed: int = 0, epoch: int = 0,
                          stream: int = 0, n_batches: Optional[int] = None, max_samples: Optional[int] = None,
                          stride: tuple[int, int] = (0, 1), partial: bool = True, sample_transform: Any = None,
                          epoch_fn: Any = None, sidecar_dir: Optional[str] = None,
                          **_image_options: Any) -> wds.DataPipeline:
    """:func:`dalle3.data.pipeline.build_pipeline` with :class:`DecodeLatent` as the decode stage.

    Same arguments (image-only ones are ignored); recaption sidecars join by shard name,
    which latent shards share with their image shards.
    """
    skips = SkipLog()
    stages: list[Any] = [
        ShardSource(shards, mode, skips, seed, epoch, stream, 20 * len(shards) + shuffle_buffer + 1000),
        TarSamples(skips, keep=LATENT_MEMBERS),
    ]
    if sidecar_dir:
        stages.append(JoinSidecar(sidecar_dir))
    if stride[1] > 1:
        stages.append(StrideSamples(*stride))
    if shuffle_buffer > 1:
        stages.append(Shuffle(shuffle_buffer, seed, epoch, stream))
    stages.append(DecodeLatent(skips))
    if caption is not None:
        stages.append(PickCaption.from_config(caption, epoch_fn if epoch_fn is not None else epoch))
    if sample_transform is not None:
        stages.append(MapSamples(sample_transform))
    if max_samples is not None:
        stages.append(TakeSamples(max_samples))
    if batch_size is not None:
        stages.append(Batch(batch_size, skips, partial))
    if n_batches is not None:
        stages.append(TakeSamples(n_batches))
    return wds.DataPipeline(*stages)


class LatentShardDataset(ShardDataset):
    """A :class:`ShardDataset` whose pipeline decodes latent shards.

    Mirrors ``ShardDataset.__iter__`` with :func:`build_latent_pipeline`; a ``decode``
    hook in the data layer's ``build_pipeline`` would make this class unnecessary.
    """

    def __iter__(self) -> Iterator[dict]:
        if not self.persistent:
            return iter(build_latent_pipeline(self.shards, epoch=self.epoch, n_batches=self.n_batches,
                                              **self.options))
        if self._stream is None or self._stream_pid != os.getpid():
            pipeline = build_latent_pipeline(self.shards, epoch=self.epoch, epoch_fn=self.shared_epoch.get,
                                             **self.options)
            self._stream, self._stream_pid = iter(pipeline), os.getpid()
        if self.n_batches is None:
            return self._stream
        return islice(self._stream, quota(self.n_batches, *worker_slot()))


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
