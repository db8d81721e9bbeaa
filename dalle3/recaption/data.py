"""Input side of the recaption job: whole shards → decoded batches, in DataLoader workers.

Unlike the training pipeline, the job must hand *every* member of every sample to the
writer (the output holds the input sample unchanged plus captions), including samples
that cannot be captioned. So each worker streams its shards itself:

    tar members ─▶ RawSample (all members, bytes untouched) ─▶ decode its image (or
    record why not) ─▶ Chunk(raw samples, images of the good ones) ─▶ ... ─▶ ShardEnd

A worker owns whole shards (worker ``w`` of ``W`` takes every ``W``-th), so one
shard's chunks arrive in order, followed by its :class:`ShardEnd` with the count of
samples read and, for an unreadable shard, the error. Right before reading a shard the
worker takes its lease for the main process (:class:`Claimer`); a shard that another
live process holds, or has committed meanwhile, is passed on as :class:`ShardSkip`. Only images are decoded, with
:func:`dalle3.data.decode.decode_image`; other members are copied as bytes and never
interpreted (so never unpickled).
"""
from __future__ import annotations

import tarfile
from dataclasses import dataclass, field
from typing import Callable, Iterator, Optional, Sequence, Union

import torch
import webdataset as wds
from torch.utils.data import IterableDataset

from dalle3.data.decode import IMAGE_MEMBERS, decode_image
from dalle3.data.lease import Holder
from dalle3.data.offline import claim_shard
from dalle3.data.pipeline import worker_slot
from dalle3.data.skips import BadSample
from dalle3.data.tarstream import FastTarInfo, check_end_of_archive, read_member, split_name

SHARD_ERRORS = (tarfile.TarError, OSError, EOFError, ValueError)
"What reading a damaged or missing shard raises (tarfile's own errors, I/O, cut-off gzip)."


@dataclass
class RawSample:
    key: str
    members: list = field(default_factory=list)
    "``(member name, lower-case suffix, bytes)`` in tar order."
    error: Optional[tuple] = None
    "``(reason, detail)`` when the sample cannot be captioned (see ``SKIP_REASONS``)."

    def suffixes(self) -> set:
        return {suffix for _, suffix, _ in self.members}


@dataclass
class Chunk:
    """A run of consecutive samples of one shard; ``images[i]`` belongs to ``samples[rows[i]]``."""

    shard: str
    samples: list
    rows: list
    images: Optional[torch.Tensor]


@dataclass
class ShardEnd:
    shard: str
    input_samples: int
    "Samples read from the shard."
    ignored_members: int = 0
    "Members that belong to no sample (directories, names without a suffix)."
    error: Optional[str] = None
    "Set when the shard could not be read to its end: it must not be committed."


@dataclass
class ShardSkip:
    shard: str
    state: str
    "``done``: committed by another process (with the same input); ``busy``: a live process holds its lease."


@dataclass
class Claimer:
    """Worker side of the leases: take a shard's lease in the main process's name (it adopts it on the shard's
    first chunk, and commits). Picklable, so it works with any DataLoader start method."""

    out_dir: str
    names: dict
    sources: dict
    holder: Holder
    timeout_s: float
    done_after: float = 0.0

    def __call__(self, shard: str) -> str:
        state, lease = claim_shard(self.out_dir, self.names[shard], self.sources.get(shard), self.holder,
                                   timeout_s=self.timeout_s, done_after=self.done_after)
        if lease is not None:
            lease.close()  # the lease file stays; the main process opens it for the heartbeat
        return state


def read_raw_samples(url: str, counts: dict) -> Iterator[RawSample]:
    """Every sample of a shard with all its members (webdataset's grouping rule).

    ``counts["ignored"]`` counts members that belong to no sample. Raises one of
    :data:`SHARD_ERRORS` when the shard cannot be opened or ends early.
    """
    stream = wds.gopen(url)
    try:
        tar = tarfile.open(fileobj=stream, mode="r|*", tarinfo=FastTarInfo)
        current: Optional[RawSample] = None
        for member in tar:
            tar.members = []  # a stream: do not keep every header
            parts = split_name(member.name) if member.isreg() else None
            if parts is None:
                counts["ignored"] = counts.get("ignored", 0) + 1
                continue
            key, suffix = parts
            if current is None or key != current.key or suffix in current.suffixes():
                if current is not None:
                    yield current
                current = RawSample(key)
            current.members.append((member.name, suffix, read_member(tar, member)))
        check_end_of_archive(tar)
        if current is not None:
            yield current
    finally:
        try:
            stream.close()
        except Exception:  # noqa: BLE001 - a failed pipe: command; the read error is what matters
            pass


def decode_raw(sample: RawSample, image_size: int, max_pixels: Optional[int]) -> Optional[torch.Tensor]:
    """The sample's image as FloatTensor[3,S,S] in [0,1], or ``None`` with ``sample.error`` set."""
    members = {suffix: data for _, suffix, data in sample.members}
    image_member = next((m for m in IMAGE_MEMBERS if m in members), None)
    try:
        if image_member is None:
            raise BadSample("no_image", f"members: {sorted(members)}")
        return decode_image(members[image_member], image_size, max_pixels)
    except BadSample as bad:
        sample.error = (bad.reason, bad.detail[:200])
        return None


class RecaptionSource(IterableDataset):
    """Worker side of the job: this rank's shards → :class:`Chunk` ... :class:`ShardEnd` items.

    Args:
        shards: the shards this rank still has to do.
        image_size: side of the decoded images (the captioners' input size).
        batch_size: a chunk is cut at this many decodable images (or 4x as many samples).
        max_pixels: header pixel limit (see :func:`decode_image`).
        claim: shard → ``"mine"`` | ``"done"`` | ``"busy"`` (a :class:`Claimer`); ``None``: read every shard.
    """

    def __init__(self, shards: Sequence[str], image_size: int, batch_size: int, max_pixels: Optional[int] = None,
                 claim: Optional[Callable[[str], str]] = None):
        super().__init__()
        self.shards, self.image_size, self.batch_size, self.max_pixels = list(shards), image_size, batch_size, max_pixels
        self.claim = claim

    def __iter__(self) -> Iterator[Union[Chunk, ShardEnd, ShardSkip]]:
        worker, workers = worker_slot()
        for shard in self.shards[worker::workers]:
            state = self.claim(shard) if self.claim is not None else "mine"
            if state != "mine":
                yield ShardSkip(shard, state)
                continue
            yield from self.read_shard(shard)

    def read_shard(self, shard: str) -> Iterator[Union[Chunk, ShardEnd]]:
        samples, rows, images = [], [], []
        counts: dict = {}
        n, error = 0, None
        try:
            for sample in read_raw_samples(shard, counts):
                n += 1
                image = decode_raw(sample, self.image_size, self.max_pixels)
                if image is not None:
                    rows.append(len(samples))
                    images.append(image)
                samples.append(sample)
                if len(images) == self.batch_size or len(samples) >= 4 * self.batch_size:
                    yield Chunk(shard, samples, rows, torch.stack(images) if images else None)
                    samples, rows, images = [], [], []
        except SHARD_ERRORS as exn:
            error = f"{type(exn).__name__}: {exn}"
        if samples and error is None:
            yield Chunk(shard, samples, rows, torch.stack(images) if images else None)
        yield ShardEnd(shard, n, counts.get("ignored", 0), error)
