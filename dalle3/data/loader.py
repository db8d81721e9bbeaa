"""An epoch-aware IterableDataset over shards, and the DataLoader that feeds it the epoch.

Training streams are infinite (shards cycled or resampled) and *persistent*: each
reader (DataLoader worker, or the main process with 0 workers) builds its pipeline
once and every epoch takes the next ``quota`` batches from it. Nothing is thrown away
at an epoch boundary (a fresh pipeline per epoch would discard a full shuffle buffer
per worker, about a quarter of an 8k-sample epoch), and workers stay alive.

The epoch reaches persistent workers through shared memory (:class:`SharedEpoch`, the
trick open_clip uses): the main process writes it before each ``iter()``, the caption
blend reads it per sample, so blends redraw every epoch.
"""
from __future__ import annotations

import multiprocessing as mp
import os
from itertools import islice
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence

import torch
from torch.utils.data import DataLoader, IterableDataset

from dalle3.data.pipeline import build_pipeline, quota, worker_slot


class SharedEpoch:
    """An epoch number that DataLoader workers see change (shared memory, not a copy)."""

    def __init__(self, epoch: int = 0):
        self.value = mp.Value("q", int(epoch), lock=False)

    def get(self) -> int:
        return int(self.value.value)

    def set(self, epoch: int) -> None:
        self.value.value = int(epoch)

    def __getstate__(self) -> dict:
        # shared memory only travels to a process being started; any other pickle/deepcopy
        # (e.g. of the DataModule) gets a detached copy of the current value
        if mp.context.get_spawning_popen() is not None:
            return {"value": self.value}
        return {"epoch": self.get()}

    def __setstate__(self, state: dict) -> None:
        self.value = state["value"] if "value" in state else mp.Value("q", state["epoch"], lock=False)


class ShardDataset(IterableDataset):
    """One rank's shards as an IterableDataset.

    Args:
        shards: this rank's shards.
        n_batches: items (batches) per epoch over all workers; ``None``: until the stream ends.
        epoch: starting epoch.
        **options: other keyword arguments of :func:`dalle3.data.pipeline.build_pipeline`.
            With ``mode`` ``cycle``/``resample`` (infinite) the stream is persistent per
            reader; with ``once`` a fresh pipeline is built for every pass.

    ``len()`` is ``n_batches`` when it is set; otherwise it raises ``TypeError``, which
    Lightning reads as "unknown length".
    """

    def __init__(self, shards: Sequence[str], n_batches: Optional[int] = None, epoch: int = 0, **options: Any):
        super().__init__()
        self.shards, self.n_batches, self.options = list(shards), n_batches, options
        self.shared_epoch = SharedEpoch(epoch)
        self._stream: Optional[Iterator[dict]] = None
        self._stream_pid: Optional[int] = None

    @property
    def epoch(self) -> int:
        return self.shared_epoch.get()

    def set_epoch(self, epoch: int) -> None:
        self.shared_epoch.set(epoch)

    @property
    def persistent(self) -> bool:
        return self.options.get("mode", "once") != "once"

    def build(self, **kwargs: Any) -> Iterable[dict]:
        """The pipeline for one pass or stream (override to compose a different one)."""
        return build_pipeline(self.shards, **kwargs, **self.options)

    def __iter__(self) -> Iterator[dict]:
        if not self.persistent:
            return iter(self.build(epoch=self.epoch, n_batches=self.n_batches))
        if self._stream is None or self._stream_pid != os.getpid():  # a forked copy must not share it
            # seeds use the epoch the stream starts in, so a resumed run does not replay epoch 0
            self._stream, self._stream_pid = iter(self.build(epoch=self.epoch, epoch_fn=self.shared_epoch.get)), \
                os.getpid()
        if self.n_batches is None:
            return self._stream
        return islice(self._stream, quota(self.n_batches, *worker_slot()))

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_stream"] = state["_stream_pid"] = None  # generators do not pickle; rebuilt per reader
        return state

    def __len__(self) -> int:
        if self.n_batches is None:
            raise TypeError("this ShardDataset has no fixed length")
        return self.n_batches


class EpochDataLoader(DataLoader):
    """A DataLoader that sets its dataset's epoch each time it is iterated.

    Lightning calls ``set_epoch`` only on samplers, which an IterableDataset does not
    use; ``epoch_fn`` (e.g. ``lambda: trainer.current_epoch``) is asked instead.
    """

    def __init__(self, dataset: ShardDataset, epoch_fn: Optional[Callable[[], int]] = None, **kwargs: Any):
        super().__init__(dataset, **kwargs)
        self.epoch_fn = epoch_fn

    def __iter__(self):
        if self.epoch_fn is not None:
            self.dataset.set_epoch(self.epoch_fn())
        return super().__iter__()


def as_is(batch: Any) -> Any:
    """``collate_fn`` for ready-made batches: the default (``default_convert``) would walk
    every string of every batch again (~15 us per sample on 64 px data)."""
    return batch


def make_loader(dataset: ShardDataset, num_workers: int,
                epoch_fn: Optional[Callable[[], int]] = None) -> EpochDataLoader:
    """Wrap a batching :class:`ShardDataset` (batches are collated in the workers).

    Workers persist across epochs when the stream does (training), so they keep their
    shuffle buffer and shard position.
    """
    return EpochDataLoader(dataset, epoch_fn=epoch_fn, batch_size=None, collate_fn=as_is, num_workers=num_workers,
                           pin_memory=torch.cuda.is_available(),
                           persistent_workers=num_workers > 0 and dataset.persistent)
