"""Latent shards: what the latents stage writes and the ldm stage reads instead of images.

A latent shard mirrors its image shard, sample for sample: ``{key}.latent.npy`` (the
VAE posterior's moments, mean and log-variance stacked on the channel axis, float16,
read with ``allow_pickle=False``), ``{key}.txt`` (alt-text) and ``{key}.json``
(``ssc``, ``dsc``, ``scene``). Captions are picked at load time by the data layer's
:class:`~dalle3.data.captions.PickCaption`, so ``caption=alt|ssc|dsc|blend`` works the
same on latents as on images. A sample the recaption job could not caption has empty
``ssc``/``dsc`` here (its image shard holds them only as ``orig_*``, and recaption
sidecars joined at load time strip them again, see :mod:`dalle3.data.sidecar`), so it
trains on its alt-text and is counted as a fallback (``caption_fallback``).

With ``ldm.latents.precompute_text`` a sample also holds ``{key}.text.safetensors``:
the frozen text encoder's per-token hidden states of each caption it has (``alt``
always, ``ssc``/``dsc`` when non-empty; float16 ``[max_length, width]`` each, no
pickle), with the captions they encode in the safetensors metadata. A reader told
to use them (``text=True``) skips, counts and reports as ``no_text_embedding`` a
sample whose member is missing or unreadable, or whose stored caption differs from
the one read now (e.g. recaption sidecars changed since): such a sample has no
embedding for the caption it could be given. :class:`PickTextEmbedding`, after the
caption pick, hands on the embedding of the chosen kind as ``context``.

Reading reuses the data layer's stages and rank/worker layout
(:class:`~dalle3.data.datamodule.ShardDataModule`); only the decode stage differs.
"""
from __future__ import annotations

import io
import json
import struct
from functools import partial
from typing import Any, Iterable, Mapping, Optional, Sequence

import numpy as np
import torch
import webdataset as wds

from dalle3.data.captions import CAPTION_KINDS
from dalle3.data.datamodule import ShardDataModule
from dalle3.data.decode import decode_json, decode_text
from dalle3.data.loader import ShardDataset
from dalle3.data.pipeline import build_pipeline
from dalle3.data.skips import BadSample

LATENT_MEMBERS = frozenset(("latent.npy", "txt", "ssc.txt", "dsc.txt", "json"))
TEXT_MEMBER = "text.safetensors"
"Member holding the precomputed text embeddings of a latent sample."


def encode_latent_sample(key: str, moments: torch.Tensor, alt: str, ssc: str, dsc: str, scene_json: str,
                         text: Optional[bytes] = None) -> dict:
    """One latent-shard sample for ``wds.TarWriter`` (moments as float16; ``text`` from :func:`encode_text_member`)."""
    buf = io.BytesIO()
    np.save(buf, moments.detach().cpu().to(torch.float16).numpy(), allow_pickle=False)
    meta = {"ssc": ssc, "dsc": dsc, "scene": json.loads(scene_json) if scene_json else None}
    sample = {"__key__": key, "latent.npy": buf.getvalue(), "txt": alt.encode(), "json": json.dumps(meta).encode()}
    if text is not None:
        sample[TEXT_MEMBER] = text
    return sample


def encode_text_member(embeddings: Mapping[str, torch.Tensor], captions: Mapping[str, str]) -> bytes:
    """``{kind: FloatTensor[L, D]}`` → safetensors bytes (float16), each kind's caption in the metadata."""
    from safetensors.torch import save

    tensors = {k: v.detach().cpu().to(torch.float16).contiguous() for k, v in embeddings.items()}
    return save(tensors, metadata={k: captions[k] for k in tensors})


def decode_text_member(data: bytes) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Inverse of :func:`encode_text_member`: ``(embeddings, captions)``; raises ``ValueError`` if unreadable."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    try:
        (n,) = struct.unpack("<Q", data[:8])  # safetensors: u64 header length, then the JSON header
        captions = json.loads(data[8:8 + n]).get("__metadata__") or {}
        return load(data), captions
    except (SafetensorError, ValueError, struct.error) as exn:  # JSONDecodeError is a ValueError
        raise ValueError(f"{TEXT_MEMBER}: {exn}") from None


def text_embeddings(raw: dict, sample: dict) -> dict[str, torch.Tensor]:
    """The stored embeddings a sample's caption pick may ask for (``alt``, and each non-empty synthetic one).

    Raises:
        BadSample: ``no_text_embedding``, if one is missing, unreadable or made from another caption.
    """
    if TEXT_MEMBER not in raw:
        raise BadSample("no_text_embedding", f"no {TEXT_MEMBER} member")
    try:
        tensors, captions = decode_text_member(raw[TEXT_MEMBER])
    except ValueError as exn:
        raise BadSample("no_text_embedding", str(exn)) from None
    wanted = [k for k in CAPTION_KINDS if k == "alt" or sample[k]]
    for kind in wanted:
        if kind not in tensors or captions.get(kind) != sample[kind]:
            raise BadSample("no_text_embedding", f"{kind}: missing, or stored for another caption")
    return {k: tensors[k] for k in wanted}


def decode_latent_sample(raw: dict, text: bool = False) -> dict:
    """Raw latent-shard sample → ``{key, latent: FloatTensor[2C,h,w], alt, ssc, dsc, scene_json}``.

    With ``text``, also ``text_emb``: ``{kind: HalfTensor[L, D]}`` (see :func:`text_embeddings`).
    """
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
    sample = {"key": raw["__key__"], "url": raw.get("__url__", ""), "latent": latent,
              "alt": decode_text(raw["txt"]) if "txt" in raw else "", "ssc": ssc, "dsc": dsc,
              "scene_json": "" if scene is None else json.dumps(scene)}
    if text:
        sample["text_emb"] = text_embeddings(raw, sample)
    return sample


class PickTextEmbedding:
    """Pipeline stage (after the caption pick): ``context`` = the stored embedding of ``caption_kind``.

    The caption source and blend stay in :class:`~dalle3.data.captions.PickCaption`; this
    only follows the kind it chose. ``text_emb`` is dropped so batches stay small.
    """

    def __call__(self, sample: dict) -> dict:
        sample["context"] = sample.pop("text_emb")[sample["caption_kind"]]
        return sample


def build_latent_pipeline(shards: Sequence[str], text: bool = False, **options: Any) -> wds.DataPipeline:
    """:func:`dalle3.data.pipeline.build_pipeline` decoding latent shards (same arguments).

    Recaption sidecars join by shard name, which latent shards share with their image shards.
    With ``text``, samples carry their stored text embeddings (``text_emb``, see
    :func:`decode_latent_sample`); pass :class:`PickTextEmbedding` as ``sample_transform``
    to turn them into ``context``.
    """
    keep = LATENT_MEMBERS | {TEXT_MEMBER} if text else LATENT_MEMBERS
    return build_pipeline(shards, **options, decode_fn=partial(decode_latent_sample, text=text), keep=keep)


class LatentShardDataset(ShardDataset):
    """A :class:`ShardDataset` whose pipeline decodes latent shards."""

    def build(self, **kwargs: Any) -> Iterable[dict]:
        return build_latent_pipeline(self.shards, **kwargs, **self.options)


class LatentDataModule(ShardDataModule):
    """:class:`ShardDataModule` over latent shards: same rank split, epoch length and blend.

    ``data.train_shards`` / ``data.val_shards`` should point at the latent folders
    (``ldm.latents.out_dir``/train, /val); the ldm stage sets them. With ``text``,
    batches carry ``context`` [B, L, D] (float16): the stored embedding of each
    delivered caption (see :func:`decode_latent_sample`). ``caption_fallback`` lists,
    per sample, whether a wanted synthetic caption was missing and alt-text was given
    (sum it for :data:`~dalle3.data.captions.FALLBACK_COUNT`).
    """

    def __init__(self, data: Any, caption: Any = None, *, text: bool = False, **kwargs: Any):
        if text:
            kwargs["sample_transform"] = PickTextEmbedding()
        super().__init__(data, caption, **kwargs)
        self.text = text

    def _build_train(self, rank: int, world: int) -> ShardDataset:
        return _as_latent(super()._build_train(rank, world), self.text)

    def _build_val(self, rank: int, world: int) -> ShardDataset:
        return _as_latent(super()._build_val(rank, world), self.text)


def _as_latent(dataset: ShardDataset, text: bool) -> LatentShardDataset:
    return LatentShardDataset(dataset.shards, n_batches=dataset.n_batches, epoch=dataset.epoch, text=text,
                              **dataset.options)
