"""Export a captioner as open_clip loads it: safetensors weights + the model config JSON.

Folder layout (``<run_dir>/export``, :func:`export_dir`; the file names live in
:mod:`dalle3.captioner.layout`):

* ``open_clip_model.safetensors``: the ``CoCa`` state dict (no pickle anywhere);
* ``open_clip_config.json``: ``{"model_cfg", "preprocess_cfg"}``, so
  ``open_clip.create_model("local-dir:<folder>")`` works as is;
* ``<model_name>.json``: the bare model config, for ``open_clip.add_model_config(file)``
  then ``open_clip.create_model(<model_name>, pretrained=<weights>)``;
* ``tokenizer.json``: our word-level vocabulary (absent for open_clip's BPE tokenizer);
* ``captioner.json``: model name, tokenizer kind, ``conv_stem`` (``{"channels", "norm"}``
  of the stem, or null) and free-form metadata (target, steps).

With ``captioner.arch.stem: patch`` (and every named open_clip model) the folder loads
with open_clip's own ``create_model`` as described. With ``stem: conv`` (the tiny preset)
the image tower's patch embedding is a small CNN that open_clip cannot build, so load it
with :func:`load_exported`, which builds the model with open_clip and adds the stem
before reading the same safetensors file.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional, Union

import open_clip
import torch
from safetensors.torch import save_file
from torch import nn

from dalle3.captioner.layout import CONFIG_FILE, META_FILE, TOKENIZER_FILE, WEIGHTS_FILE
from dalle3.captioner.model import CLIP_MEAN, CLIP_STD, Captioner, check_finite, create_coca
from dalle3.captioner.stem import StemSpec
from dalle3.captioner.tokenizer import WordTokenizer
from dalle3.config.captioner import EXPORT_DIR
from dalle3.utils.io import atomic_path, atomic_write_json


def export_dir(run_dir: Union[str, os.PathLike]) -> Path:
    """The export folder of a captioner run folder: ``<run_dir>/export``."""
    return Path(run_dir) / EXPORT_DIR


def is_export(folder: Union[str, os.PathLike]) -> bool:
    """Whether ``folder`` is a captioner export (it holds the export's ``captioner.json``)."""
    return (Path(folder) / META_FILE).is_file()


def plain_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """CPU, contiguous, unshared copies (safetensors refuses shared storage)."""
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}


def export_captioner(captioner: Captioner, out_dir: Union[str, Path], meta: Optional[dict] = None,
                     state_dict: Optional[dict[str, torch.Tensor]] = None) -> Path:
    """Write ``captioner`` to ``out_dir`` (see the module docstring); return the folder.

    Args:
        captioner: the built captioner (its model, tokenizer, name and model config).
        out_dir: destination folder (created; files are replaced atomically).
        meta: extra fields for ``captioner.json`` (target, step, ...).
        state_dict: weights to write instead of ``captioner.model``'s (e.g. consolidated
            from ZeRO shards).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    weights = state_dict if state_dict is not None else plain_state_dict(captioner.model)
    with atomic_path(out / WEIGHTS_FILE) as tmp:
        save_file(weights, tmp, metadata={"format": "pt"})
    size = captioner.model_cfg["vision_cfg"]["image_size"]
    preprocess = {"size": size, "mean": list(CLIP_MEAN), "std": list(CLIP_STD), "interpolation": "bicubic",
                  "resize_mode": "shortest"}
    atomic_write_json(out / CONFIG_FILE, {"model_cfg": captioner.model_cfg, "preprocess_cfg": preprocess}, indent=2)
    atomic_write_json(out / f"{captioner.model_name}.json", captioner.model_cfg, indent=2)
    tok = captioner.tokenizer
    if isinstance(tok, WordTokenizer):
        tok.save(out / TOKENIZER_FILE)
    info = {"model_name": captioner.model_name, "conv_stem": captioner.stem.to_json() if captioner.stem else None,
            "tokenizer": "world" if isinstance(tok, WordTokenizer) else "open_clip", **(meta or {})}
    atomic_write_json(out / META_FILE, info, indent=2, default=str)
    return out


def load_exported(folder: Union[str, Path], device: Union[str, torch.device] = "cpu") -> Captioner:
    """Load an export: open_clip's own ``create_model(name, pretrained=file)``, plus the conv stem if it has one."""
    folder = Path(folder)
    info = json.loads((folder / META_FILE).read_text())
    name, stem = info["model_name"], StemSpec.from_json(info.get("conv_stem"))
    model_cfg = json.loads((folder / f"{name}.json").read_text())
    model = create_coca(name, model_cfg, stem, str(folder / WEIGHTS_FILE), device)
    check_finite(model)
    if (folder / TOKENIZER_FILE).exists():
        tokenizer: Any = WordTokenizer.load(folder / TOKENIZER_FILE)
    else:
        tokenizer = open_clip.get_tokenizer(name)  # create_coca registered it: its text_cfg picks the tokenizer
    return Captioner(model.eval(), tokenizer, name, model_cfg, stem)
