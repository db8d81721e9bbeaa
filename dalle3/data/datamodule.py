"""``ShardDataModule``: the LightningDataModule every training stage uses.

Splitting, in this order:

1. **ranks**: ``assign_shards(shards, rank, world_size)`` gives each rank a disjoint
   subset (rank/world from the attached Trainer at ``setup()``, else ``dist_env()``);
2. **DataLoader workers**: each worker draws (``data.resampled=true``) or cycles through
   (``false``) its rank's shards, with its own seed.

The training epoch has a fixed length: every rank yields exactly
``epoch_samples // world_size // per_device_batch`` batches, split exactly over its
workers, so uneven shard counts never make one rank wait for another in DDP. Fewer
shards than ranks fails at ``setup()`` with one line.

Validation is not resampled: each rank reads its own shards once, in a fixed order,
at most ``val_samples`` samples. With fewer validation shards than ranks every rank
reads all of them and keeps every ``world_size``-th sample instead (still disjoint).

Batches (dicts): ``image`` FloatTensor[B,3,S,S] in [0,1]; ``caption``,
``caption_kind`` (alt|ssc|dsc), ``key``, ``scene`` (JSON or ""), ``alt``, ``ssc``,
``dsc``, ``url``: lists of str; ``n_skipped``: int64 scalar tensor and ``skipped``:
``{"key": [...], "reason": [...]}``, the samples this batch's worker dropped since its
previous batch (sum ``n_skipped`` over batches for a total; see :mod:`dalle3.data.skips`).
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import lightning.pytorch as pl

from dalle3.config.convert import to_dataclass
from dalle3.config.schema import CaptionConfig, DataConfig, validate_caption
from dalle3.config.validate import ConfigError, per_device_batch
from dalle3.data.loader import EpochDataLoader, ShardDataset, make_loader
from dalle3.data.shards import assign_shards, validate_shards
from dalle3.dist.env import dist_env
from dalle3.utils.logging import get_logger

log = get_logger(__name__)


def train_layout(n_shards: int, world_size: int, data: DataConfig) -> tuple[int, int]:
    """``(per-device batch, batches per rank-epoch)``, or a one-line ConfigError."""
    if n_shards < world_size:
        raise ConfigError(
            f"data.train_shards has {n_shards} shard(s) for {world_size} ranks, so some rank would read "
            f"nothing; allowed: at least {world_size} shards (write smaller shards, e.g. lower "
            f"datagen.shard_size, or use fewer trainer.devices x trainer.num_nodes)")
    batch = per_device_batch(data.global_batch_size, world_size)
    n_batches = data.epoch_samples // world_size // batch
    if n_batches < 1:
        raise ConfigError(f"data.epoch_samples={data.epoch_samples} gives no full batch of {batch} per rank "
                          f"on {world_size} ranks; allowed: at least data.global_batch_size="
                          f"{data.global_batch_size}")
    return batch, n_batches


class ShardDataModule(pl.LightningDataModule):
    """Train/val loaders over webdataset shards.

    Args:
        data: ``DataConfig`` (dataclass, OmegaConf node or dict).
        caption: ``CaptionConfig``; default: the schema's (95% DSC blend).
        seed: seeds shard order and shuffling (the blend uses ``caption.seed``).
        sample_transform: ``dict -> dict | None`` run on each decoded sample in the
            workers (e.g. tokenise ``sample["caption"]``); tensors it adds are stacked.
        max_pixels: refuse images whose header claims more pixels (default: PIL's limit).
        sidecar_dir: folder of the recaption job's caption sidecars to join at load time
            (``recaption.mode=sidecar``); default ``data.sidecar_dir`` where the config has it.
    """

    def __init__(self, data: Any, caption: Any = None, *, seed: int = 0,
                 sample_transform: Optional[Callable[[dict], Optional[dict]]] = None,
                 max_pixels: Optional[int] = None, sidecar_dir: Optional[str] = None):
        super().__init__()
        self.data_cfg = to_dataclass(DataConfig, data)
        self.caption_cfg = CaptionConfig() if caption is None else to_dataclass(CaptionConfig, caption)
        validate_caption(self.caption_cfg)
        self.seed, self.sample_transform, self.max_pixels = seed, sample_transform, max_pixels
        self.sidecar_dir = sidecar_dir if sidecar_dir is not None else self.data_cfg.sidecar_dir
        self._epoch = 0
        self._train: Optional[ShardDataset] = None
        self._val: Optional[ShardDataset] = None

    # -- where we are -------------------------------------------------------
    def rank_world(self) -> tuple[int, int]:
        """Global rank and world size: from the attached Trainer, else ``dist_env()``."""
        if self.trainer is not None:
            return self.trainer.global_rank, self.trainer.world_size
        env = dist_env()
        return env.rank, env.world_size

    def set_epoch(self, epoch: int) -> None:
        """Epoch for loops without a Trainer (with one, ``trainer.current_epoch`` is used)."""
        self._epoch = int(epoch)

    def current_epoch(self) -> int:
        return self.trainer.current_epoch if self.trainer is not None else self._epoch

    # -- Lightning hooks ----------------------------------------------------
    def setup(self, stage: Optional[str] = None) -> None:
        rank, world = self.rank_world()
        if stage in (None, "fit"):
            self._train = self._build_train(rank, world)
        if stage in (None, "fit", "validate") and self.data_cfg.val_shards:
            self._val = self._build_val(rank, world)

    def train_dataset(self) -> ShardDataset:
        """This rank's training dataset (batches of the per-device size, fixed length)."""
        if self._train is None:
            self._train = self._build_train(*self.rank_world())
        return self._train

    def val_dataset(self) -> ShardDataset:
        if self._val is None:
            self._val = self._build_val(*self.rank_world())
        return self._val

    def train_dataloader(self) -> EpochDataLoader:
        dataset = self.train_dataset()
        workers = self.data_cfg.num_workers if self.data_cfg.resampled else min(self.data_cfg.num_workers,
                                                                                len(dataset.shards))
        return make_loader(dataset, workers, epoch_fn=self.current_epoch)

    def val_dataloader(self) -> Any:
        if not self.data_cfg.val_shards:
            return []
        dataset = self.val_dataset()
        return make_loader(dataset, min(self.data_cfg.num_workers, len(dataset.shards)))

    # -- builders -------------------------------------------------------------
    def _common(self) -> dict:
        return dict(image_size=self.data_cfg.image_size, caption=self.caption_cfg, seed=self.seed,
                    sample_transform=self.sample_transform, max_pixels=self.max_pixels,
                    sidecar_dir=self.sidecar_dir)

    def _build_train(self, rank: int, world: int) -> ShardDataset:
        shards = validate_shards("data.train_shards", self.data_cfg.train_shards)
        batch, n_batches = train_layout(len(shards), world, self.data_cfg)
        mine = assign_shards(shards, rank, world)
        log.info("train: %d shards, rank %d/%d reads %d; %d batches of %d per rank-epoch (%s)", len(shards),
                 rank, world, len(mine), n_batches, batch, "resampled" if self.data_cfg.resampled else "cycled")
        return ShardDataset(mine, n_batches=n_batches, epoch=self.current_epoch(), batch_size=batch, partial=False,
                            mode="resample" if self.data_cfg.resampled else "cycle",
                            shuffle_buffer=self.data_cfg.shuffle_buffer, stream=rank, **self._common())

    def _build_val(self, rank: int, world: int) -> ShardDataset:
        shards = validate_shards("data.val_shards", self.data_cfg.val_shards)
        batch = per_device_batch(self.data_cfg.global_batch_size, world)
        if len(shards) >= world:
            mine, stride = assign_shards(shards, rank, world), (0, 1)
        else:  # a shard per rank is not possible: share the shards, split their samples
            mine, stride = shards, (rank, world)
            log.info("val: %d shard(s) for %d ranks; every rank reads all and keeps every %d-th sample",
                     len(shards), world, world)
        return ShardDataset(mine, batch_size=batch, max_samples=self.data_cfg.val_samples, partial=True,
                            mode="once", shuffle_buffer=0, stride=stride, stream=rank, **self._common())
