"""The shard → batch pipeline, composed from small named stages.

:func:`build_pipeline` is the one builder every stage of the project uses (captioner,
LDM, recaption job, eval): it returns a ``webdataset.DataPipeline`` of

    ShardSource → TarSamples → [JoinSidecar] → [StrideSamples] → [Shuffle]
    → DecodeSample → [PickCaption] → [sample_transform] → [TakeSamples]
    → [Batch] → [TakeSamples of batches]

Every stage that needs randomness or the DataLoader worker id reads them when it is
iterated (inside the worker) and seeds itself from ``(seed, epoch, stream, worker)``,
so a run's data order is reproducible for a given worker count. The caption blend
reads the epoch per sample, so it redraws every epoch even in a stream that spans
epochs (see :mod:`dalle3.data.loader`).
"""
from __future__ import annotations

import hashlib
import random
from typing import Any, Callable, Collection, Iterable, Iterator, Optional, Sequence

import torch
import webdataset as wds
from torch.utils.data import default_collate, get_worker_info

from dalle3.data.captions import PickCaption
from dalle3.data.decode import DecodeSample
from dalle3.data.sidecar import JoinSidecar
from dalle3.data.skips import SkipLog
from dalle3.data.tarstream import TarSamples

SOURCE_MODES = ("once", "cycle", "resample")
"``once``: each worker reads its share of the shards once, in order (evaluation). ``cycle``: the worker's share, reshuffled and repeated forever. ``resample``: shards drawn with replacement from the whole list, forever."
BATCH_NAMES = {"scene_json": "scene"}
"Sample field → batch field renames."


def worker_slot() -> tuple[int, int]:
    """``(worker id, number of workers)`` of the calling DataLoader worker; ``(0, 1)`` outside one."""
    info = get_worker_info()
    return (0, 1) if info is None else (info.id, info.num_workers)


def stable_seed(*parts: Any) -> int:
    """A 64-bit seed from its parts, the same in every process (unlike ``hash``)."""
    return int.from_bytes(hashlib.blake2b(repr(parts).encode(), digest_size=8).digest(), "little")


def quota(total: int, worker: int, workers: int) -> int:
    """Worker ``worker``'s share of ``total`` items; shares sum to ``total`` exactly."""
    return total // workers + (1 if worker < total % workers else 0)


class ShardSource:
    """First stage: yields ``{"url": shard}`` for this worker (see :data:`SOURCE_MODES`).

    ``cycle`` gives each worker every ``num_workers``-th shard; if there are fewer shards
    than workers, every worker cycles through all of them (in its own order). Infinite
    modes raise instead of spinning forever when ``starve_after`` shards in a row add no
    decodable sample (a dataset of empty or corrupt shards would otherwise hang DDP).
    """

    def __init__(self, shards: Sequence[str], mode: str, skips: SkipLog, seed: int = 0, epoch: int = 0,
                 stream: int = 0, starve_after: Optional[int] = None):
        if mode not in SOURCE_MODES:
            raise ValueError(f"mode={mode!r}; allowed: {' | '.join(SOURCE_MODES)}")
        self.shards, self.mode, self.skips = list(shards), mode, skips
        self.seed, self.epoch, self.stream = seed, epoch, stream
        self.starve_after = starve_after or 20 * len(self.shards) + 1000  # P(false alarm) ~ e^-20

    def _urls(self) -> Iterator[str]:
        worker, workers = worker_slot()
        rng = random.Random(stable_seed("shards", self.seed, self.epoch, self.stream, worker))
        if self.mode == "resample":
            while True:
                yield rng.choice(self.shards)
        mine = self.shards[worker::workers] if len(self.shards) >= workers or self.mode == "once" else self.shards
        if self.mode == "once":
            yield from mine
            return
        while True:
            order = list(mine)
            rng.shuffle(order)
            yield from order

    def __call__(self) -> Iterator[dict]:
        if not self.shards:
            return
        last_good, idle = self.skips.n_good, 0
        for url in self._urls():
            idle = 0 if self.skips.n_good != last_good else idle + 1
            last_good = self.skips.n_good
            if self.mode != "once" and idle > self.starve_after:
                raise RuntimeError(f"{idle} shards in a row gave no usable sample (skipped: {self.skips.summary()}); "
                                   f"check the shards, e.g. {self.shards[0]!r}")
            yield {"url": url}


class StrideSamples:
    """Keep every ``step``-th raw sample starting at ``offset`` (a rank's share of shared shards)."""

    def __init__(self, offset: int, step: int):
        self.offset, self.step = offset, step

    def __call__(self, samples: Iterable[dict]) -> Iterator[dict]:
        for i, sample in enumerate(samples):
            if i % self.step == self.offset:
                yield sample


class Shuffle:
    """Buffer shuffle (webdataset's), seeded per (seed, epoch, stream, worker) at iteration time."""

    def __init__(self, bufsize: int, seed: int = 0, epoch: int = 0, stream: int = 0):
        self.bufsize, self.seed, self.epoch, self.stream = bufsize, seed, epoch, stream

    def __call__(self, samples: Iterable[dict]) -> Iterator[dict]:
        seed = stable_seed("shuffle", self.seed, self.epoch, self.stream, worker_slot()[0])
        return wds.shuffle(self.bufsize, initial=min(100, self.bufsize), seed=seed)(samples)


class TakeSamples:
    """Stop after this worker's share of ``total`` items (samples or batches)."""

    def __init__(self, total: int):
        self.total = total

    def __call__(self, items: Iterable[Any]) -> Iterator[Any]:
        left = quota(self.total, *worker_slot())
        if left <= 0:
            return
        for item in items:
            yield item
            left -= 1
            if left == 0:
                return


def collate(samples: list[dict], skipped: list[tuple[str, str]]) -> dict:
    """Samples → batch: tensors stacked, numbers to tensors, everything else listed.

    Adds ``n_skipped`` (int64 scalar tensor) and ``skipped`` (``{"key": [...], "reason": [...]}``):
    the samples this worker dropped since its previous batch. (Plain lists and dicts survive
    the DataLoader unchanged; tuples would come back as lists.)
    """
    batch: dict[str, Any] = {}
    for name, first in samples[0].items():
        values = [s[name] for s in samples]
        if isinstance(first, torch.Tensor):  # in a worker, default_collate stacks straight into shared memory
            batch[BATCH_NAMES.get(name, name)] = default_collate(values)
        elif isinstance(first, (int, float)) and not isinstance(first, bool):
            batch[BATCH_NAMES.get(name, name)] = torch.tensor(values)
        else:
            batch[BATCH_NAMES.get(name, name)] = values
    batch["n_skipped"] = torch.tensor(len(skipped), dtype=torch.int64)
    batch["skipped"] = {"key": [k for k, _ in skipped], "reason": [r for _, r in skipped]}
    return batch


class Batch:
    """Group samples into collated batches; the last, short one only if ``partial``."""

    def __init__(self, batch_size: int, skips: SkipLog, partial: bool = False):
        self.batch_size, self.skips, self.partial = batch_size, skips, partial

    def __call__(self, samples: Iterable[dict]) -> Iterator[dict]:
        buf: list[dict] = []
        for sample in samples:
            buf.append(sample)
            if len(buf) == self.batch_size:
                yield collate(buf, self.skips.drain())
                buf = []
        if buf and self.partial:
            yield collate(buf, self.skips.drain())


class MapSamples:
    """Apply a caller's per-sample transform (e.g. tokenisation); ``None`` drops the sample."""

    def __init__(self, fn: Callable[[dict], Optional[dict]]):
        self.fn = fn

    def __call__(self, samples: Iterable[dict]) -> Iterator[dict]:
        for sample in samples:
            out = self.fn(sample)
            if out is not None:
                yield out


def build_pipeline(shards: Sequence[str], *, image_size: int = 64, caption: Any = None,
                   batch_size: Optional[int] = None, mode: str = "once", shuffle_buffer: int = 0,
                   seed: int = 0, epoch: int = 0, stream: int = 0, n_batches: Optional[int] = None,
                   max_samples: Optional[int] = None, stride: tuple[int, int] = (0, 1), partial: bool = True,
                   sample_transform: Optional[Callable[[dict], Optional[dict]]] = None,
                   max_pixels: Optional[int] = None, epoch_fn: Optional[Callable[[], int]] = None,
                   sidecar_dir: Optional[str] = None, decode_fn: Optional[Callable[[dict], dict]] = None,
                   keep: Optional[Collection[str]] = None) -> wds.DataPipeline:
    """Compose the stages for one reader's shards.

    Args:
        shards: this reader's shards (already split over ranks, e.g. by ``assign_shards``);
            DataLoader workers split them further (see :class:`ShardSource`).
        image_size: decoded images are ``[3, image_size, image_size]``.
        caption: a ``CaptionConfig`` (or node) to add ``caption``/``caption_kind``; ``None``: don't.
        batch_size: collate batches of this size (see :func:`collate`); ``None``: yield samples.
        mode: ``once`` | ``cycle`` | ``resample`` (:data:`SOURCE_MODES`).
        shuffle_buffer: raw-sample shuffle buffer (0: keep shard order).
        seed, epoch, stream: seed the shard order, the shuffle and (with the key) the
            caption blend; ``stream`` (the rank) decorrelates readers.
        n_batches: stop after this many batches in total over all DataLoader workers.
        max_samples: stop after this many samples in total over all DataLoader workers.
        stride: ``(offset, step)``: keep every step-th raw sample (ranks sharing shards).
        partial: yield the last, short batch of a finite stream.
        sample_transform: ``dict -> dict | None`` applied to each decoded sample.
        max_pixels: image pixel limit (see :func:`dalle3.data.decode.decode_image`).
        epoch_fn: if given, the caption blend asks it for the epoch per sample (a
            persistent stream spanning epochs); ``epoch`` still seeds shards and shuffle.
        sidecar_dir: join the recaption job's caption sidecars from this folder
            (:class:`dalle3.data.sidecar.JoinSidecar`); ``None``: captions come from the shards.
        decode_fn: decode other shard kinds (e.g. latents): ``raw -> sample``, raising
            :class:`~dalle3.data.skips.BadSample`; default: images (:func:`~dalle3.data.decode.decode_sample`).
        keep: tar member suffixes to read (default :data:`~dalle3.data.decode.KEEP_MEMBERS`);
            nothing else is read out of the tar.
    """
    skips = SkipLog()
    stages: list[Any] = [
        # the shuffle buffer pulls up to `shuffle_buffer` samples before any is decoded
        ShardSource(shards, mode, skips, seed, epoch, stream, 20 * len(shards) + shuffle_buffer + 1000),
        TarSamples(skips) if keep is None else TarSamples(skips, keep=keep),
    ]
    if sidecar_dir:
        stages.append(JoinSidecar(sidecar_dir))
    if stride[1] > 1:
        stages.append(StrideSamples(*stride))
    if shuffle_buffer > 1:
        stages.append(Shuffle(shuffle_buffer, seed, epoch, stream))
    stages.append(DecodeSample(image_size, skips, max_pixels, fn=decode_fn))
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
