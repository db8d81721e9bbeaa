"""An ldm run's identity, ``<run_dir>/run.json``: what it was trained on, written by the run itself.

The evaluation and the report read this file, never the run's folder name. It holds the
caption source, the synthetic kind and blend ratio, the share of DSC captions, the seed,
the steps trained, a hash of the config that decides the model, the captioner exports
whose captions the training shards hold, and the resolved ``ldm`` block (so a run is
rebuilt with its own parts, whatever the evaluating config says).
"""
from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Optional

from omegaconf import OmegaConf

from dalle3.config.validate import ConfigError
from dalle3.utils.io import atomic_write_json

RUN_FILE = "run.json"
_NOT_IDENTITY = ("paths", "trainer.resume", "trainer.max_steps", "trainer.progress_bar", "trainer.devices", "trainer.num_nodes",
                 "trainer.strategy", "trainer.zero_stage", "trainer.offload", "trainer.cpu_threads",
                 "data.num_workers", "recaption", "eval", "upsample", "datagen.workers")
"Config keys that change where, how fast or how long a run trains, not what it learns: left out of the hash."


def caption_shares(caption: Any) -> dict[str, float]:
    """Share of training samples per caption kind for a ``caption`` block."""
    shares = {"alt": 0.0, "ssc": 0.0, "dsc": 0.0}
    if caption.source == "blend":
        shares[caption.synthetic], shares["alt"] = float(caption.ratio), 1.0 - float(caption.ratio)
    else:
        shares[caption.source] = 1.0
    return shares


def run_label(caption: Any) -> str:
    """``alt``, ``95% dsc``, ``100% dsc``, ``95% ssc``: how tables and figures name a run."""
    if caption.source == "alt":
        return "alt"
    kind, share = (caption.synthetic, caption.ratio) if caption.source == "blend" else (caption.source, 1.0)
    return f"{round(100 * float(share), 1):g}% {kind}"


def config_hash(cfg: Any) -> str:
    """12 hex digits of the resolved config without paths and launch settings (:data:`_NOT_IDENTITY`)."""
    data = OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else dict(cfg)
    for dotted in _NOT_IDENTITY:
        node, *rest = dotted.split(".")
        parent = data
        for part in rest:
            parent, node = parent.get(node, {}), part
        if isinstance(parent, dict):
            parent.pop(node, None)
    data.get("ldm", {}).pop("run_dir", None)
    data.get("ldm", {}).pop("generate", None)
    for key in ("data", "ldm"):  # shard and part paths differ between machines; what they hold is recorded apart
        _drop_paths(data.get(key, {}))
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _drop_paths(node: dict) -> None:
    for k in list(node):
        if isinstance(node[k], dict):
            _drop_paths(node[k])
        elif k in ("train_shards", "val_shards", "sidecar_dir", "pretrained", "path", "out_dir", "checkpoint", "export"):
            node.pop(k)


def captioners_of(cfg: Any) -> dict[str, str]:
    """``{kind: export}`` of the captioners whose captions ``data.train_shards`` (or the sidecars) hold,
    from the recaption manifest; empty for shards that were not recaptioned."""
    from dalle3.data.offline import completed

    found: dict[str, set] = {}
    for folder in (cfg.data.train_shards, cfg.data.sidecar_dir):
        if folder and os.path.isdir(folder):
            for entry in completed(folder).values():
                for kind, export in (entry.get("captioners") or {}).items():
                    found.setdefault(kind, set()).add(str(export))
    return {kind: sorted(exports)[0] if len(exports) == 1 else sorted(exports) for kind, exports in found.items()}


def run_info(cfg: Any, step: int) -> dict:
    """The identity of the ldm run that ``cfg`` trains, after ``step`` steps."""
    return {"label": run_label(cfg.caption), "caption_source": cfg.caption.source,
            "synthetic": None if cfg.caption.source == "alt" else
            (cfg.caption.synthetic if cfg.caption.source == "blend" else cfg.caption.source),
            "ratio": float(cfg.caption.ratio) if cfg.caption.source == "blend" else None,
            "shares": caption_shares(cfg.caption), "seed": int(cfg.seed), "steps": int(step),
            "max_steps": int(cfg.trainer.max_steps), "config_hash": config_hash(cfg),
            "captioners": captioners_of(cfg), "run_dir": str(cfg.ldm.run_dir),
            "ldm": OmegaConf.to_container(cfg.ldm, resolve=True) if OmegaConf.is_config(cfg.ldm) else None}


def write_run_info(run_dir: str, info: dict) -> str:
    path = os.path.join(run_dir, RUN_FILE)
    atomic_write_json(path, info, indent=1)
    return path


def read_run_info(run_dir: str) -> dict:
    """``<run_dir>/run.json``, or a one-line ConfigError naming the folder."""
    path = os.path.join(run_dir, RUN_FILE)
    if not os.path.isfile(path):
        raise ConfigError(f"{run_dir!r} has no {RUN_FILE}; allowed: the folder of an ldm run "
                          "(trained with `dalle3-train stage=ldm`)")
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def check_same_run(run_dir: str, info: dict) -> Optional[str]:
    """Why resuming in ``run_dir`` would mix two runs (another config hash), or None."""
    path = os.path.join(run_dir, RUN_FILE)
    if not os.path.isfile(path):
        return None
    old = read_run_info(run_dir)
    if old.get("config_hash") != info["config_hash"]:
        return (f"{run_dir!r} holds a run with another config (hash {old.get('config_hash')} vs "
                f"{info['config_hash']})")
    return None
