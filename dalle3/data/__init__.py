"""Shared data layer: shard specs and splitting, safe decoding, caption choice, pipelines.

Import the pieces from their modules; the common ones are re-exported here.
``ShardDataModule`` (Lightning) lives in :mod:`dalle3.data.datamodule` and is imported
lazily so that offline jobs can use the pipeline without importing Lightning.
"""
from dalle3.data.captions import PickCaption, blend_draw, pick_caption
from dalle3.data.decode import DecodeSample, decode_image, decode_sample, keep_member
from dalle3.data.loader import EpochDataLoader, ShardDataset, SharedEpoch, make_loader
from dalle3.data.pipeline import build_pipeline, collate
from dalle3.data.shards import assign_shards, expand_shards
from dalle3.data.skips import SKIP_REASONS, BadSample, SkipLog
from dalle3.data.tarstream import TarSamples

__all__ = [
    "PickCaption", "blend_draw", "pick_caption", "DecodeSample", "decode_image", "decode_sample", "keep_member",
    "EpochDataLoader", "ShardDataset", "SharedEpoch", "make_loader", "build_pipeline", "collate", "assign_shards",
    "expand_shards", "SKIP_REASONS", "BadSample", "SkipLog", "TarSamples", "ShardDataModule",
]


def __getattr__(name: str):
    if name == "ShardDataModule":
        from dalle3.data.datamodule import ShardDataModule

        return ShardDataModule
    raise AttributeError(f"module 'dalle3.data' has no attribute {name!r}")
