"""Typed config of the distributed recaption job . Owned by dalle3/recaption.

``conf/recaption/default.yaml`` sets the values; ``dalle3-recaption`` (``stage=recaption``)
runs :func:`dalle3.recaption.stage.run_recaption` with them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from dalle3.config.captioner import DECODE_MODES, CaptionerDecodeConfig
from dalle3.config.validate import ConfigError, check_choice, check_positive

RECAPTION_MODES = ("shards", "sidecar")
"shards: new img2dataset-layout shards with the captions added; sidecar: one small JSON-lines file per shard."
RECAPTION_PRECISIONS = ("32", "bf16", "fp16")
"Autocast dtype of the captioners (bf16/fp16 are meant for GPUs)."
RECAPTION_DEVICES = ("auto", "cpu", "cuda")
"Where the captioners run."
CAPTIONER_KINDS = ("ssc", "dsc")
"The captioners of the job: ``recaption.ssc`` and ``recaption.dsc``."


@dataclass
class RecaptionConfig:
    input_shards: str = "${data.train_shards}"
    "Shards to recaption: a folder, glob, brace pattern, list file or a comma-separated mix."
    out_dir: str = "${paths.out_dir}/recaption/shards"
    "Output folder (stage-independent, so later stages can read it): the new shards (mode=shards) or sidecars (mode=sidecar), `_manifest/`, `_summary/` and summary.json."
    mode: str = "shards"
    "shards | sidecar (see RECAPTION_MODES)."
    ssc: Optional[str] = "${captioner_export:ssc}"
    "Export folder of the short-caption (SSC) captioner; null: write no SSC captions."
    dsc: Optional[str] = "${captioner_export:dsc}"
    "Export folder of the descriptive-caption (DSC) captioner; null: write no DSC captions."
    decode: CaptionerDecodeConfig = field(default_factory=CaptionerDecodeConfig)
    "Decoding of both captioners (greedy by default; max_new_tokens bounds the DSC length)."
    batch_size: int = 64
    "Images per captioner forward pass (per rank)."
    num_workers: int = 2
    "DataLoader workers per rank reading and decoding shards (each works on whole shards); 0: in the main process."
    prefetch_factor: int = 2
    "Batches each worker decodes ahead of the model."
    max_pixels: Optional[int] = None
    "Images whose header claims more pixels are recorded as too_large, not decoded; null: PIL's limit (~89M)."
    overwrite: bool = False
    "Redo shards that are already complete (their manifest entries are dropped first)."
    lease_timeout_s: float = 300.0
    "A shard's lease whose heartbeat (refreshed every lease_timeout_s/30, at most every 5 s) is older than this is taken over; a holder on the same host whose pid is dead is taken over at once."
    device: str = "auto"
    "auto (cuda:<local rank> when a GPU is visible, else cpu) | cpu | cuda."
    precision: str = "32"
    "32 | bf16 | fp16: autocast dtype of the captioners."
    threads: int = 0
    "torch intra-op threads of the main process (0: torch's default)."
    progress_bar: bool = True
    "Show a per-rank progress bar with images/s."


def validate_recaption(cfg: Any, key: str = "recaption") -> None:
    """Check the ``recaption`` block's values (one-line :class:`ConfigError`)."""
    check_choice(f"{key}.mode", cfg.mode, RECAPTION_MODES)
    check_choice(f"{key}.precision", str(cfg.precision), RECAPTION_PRECISIONS)
    check_choice(f"{key}.device", cfg.device, RECAPTION_DEVICES)
    check_choice(f"{key}.decode.mode", cfg.decode.mode, DECODE_MODES)
    check_positive(f"{key}.batch_size", cfg.batch_size)
    check_positive(f"{key}.decode.max_new_tokens", cfg.decode.max_new_tokens)
    check_positive(f"{key}.prefetch_factor", cfg.prefetch_factor)
    if cfg.lease_timeout_s is None or cfg.lease_timeout_s <= 0:
        raise ConfigError(f"{key}.lease_timeout_s={cfg.lease_timeout_s!r} must be a positive number of seconds")
    if cfg.num_workers < 0:
        raise ConfigError(f"{key}.num_workers={cfg.num_workers} must be >= 0")
    if not (cfg.ssc or cfg.dsc):
        raise ConfigError(f"{key}.ssc and {key}.dsc are both null; allowed: at least one captioner export")
