"""The evaluation's per-prompt records: every (run, prompt kind, prompt) scored once.

A record is one line of ``<eval.out_dir>/records.jsonl`` (schema in :mod:`dalle3.eval.report`):
the judge's CLIP score against the prompt and the exact checks of what the prompt states
(:mod:`dalle3.eval.checks`). Model runs are scored on their final checkpoint with every
prompt kind, and on their intermediate checkpoints with a few prompts (CLIP score against
step). Two reference runs frame every table: ``ceiling`` (the val images through the
generated images' path) and ``chance`` (each prompt against another prompt's image).
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Optional, Sequence

import torch

from dalle3.eval.checks import ceiling_images, chance_permutation, check_images
from dalle3.eval.prompts import Prompt
from dalle3.utils.logging import get_logger

log = get_logger(__name__)

CEILING, CHANCE = "ceiling", "chance"
"Run ids of the two reference runs."


def prompts_of(prompts: Sequence[Prompt], kind: str) -> list[Prompt]:
    """The prompts that have a text of ``kind`` (5% of alt-texts are empty)."""
    return [p for p in prompts if p.text(kind).strip()]


def make_records(run: str, kind: str, prompts: Sequence[Prompt], images: torch.Tensor, judge: Any, *,
                 seed: int, step: Optional[int], out_dir: str, save_images: int = 0,
                 label: Optional[str] = None) -> list[dict]:
    """One record per prompt: image ``i`` scored against ``prompts[i]`` of ``kind``.

    Args:
        judge: a :class:`dalle3.eval.judge.JudgeScorer`, or None (no CLIP score).
        save_images: write the first N images as PNGs under ``out_dir/images`` (for the grids).
        label: the records' ``kind`` (and image folder) when it is not ``kind``: ``ssc_up`` for images
            generated from upsampled SSC prompts, still scored against the SSC prompt itself.
    """
    from dalle3.ldm.sample import to_pil

    texts = [p.text(kind) for p in prompts]
    checks = check_images(images, texts)
    clip = judge(images, texts).tolist() if judge is not None and texts else [None] * len(texts)
    out = []
    for i, (p, text) in enumerate(zip(prompts, texts)):
        image = None
        if i < save_images:
            image = os.path.join("images", _safe(run), label or kind, f"{p.key}.png")
            os.makedirs(os.path.dirname(os.path.join(out_dir, image)), exist_ok=True)
            to_pil(images[i]).save(os.path.join(out_dir, image))
        out.append({"run": run, "kind": label or kind, "key": p.key, "prompt": text, "seed": seed, "step": step,
                    "clip": None if clip[i] is None else round(float(clip[i]), 4), "checks": checks[i],
                    "image": image})
    return out


def _safe(run: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.@-]+", "_", run)


def load_val_images(spec: str, prompts: Sequence[Prompt], image_size: int) -> torch.Tensor:
    """The stored val images of ``prompts`` (in their order), decoded at ``image_size``."""
    from dalle3.data.pipeline import build_pipeline
    from dalle3.data.shards import expand_shards

    want = {p.key for p in prompts}
    found = {}
    for sample in build_pipeline(expand_shards(spec), image_size=image_size):
        if sample["key"] in want:
            found[sample["key"]] = sample["image"]
            if len(found) == len(want):
                break
    missing = want - set(found)
    if missing:
        raise ValueError(f"{len(missing)} prompt images are unreadable in {spec} (e.g. {sorted(missing)[0]})")
    return torch.stack([found[p.key] for p in prompts])


def reference_records(cfg: Any, prompts: Sequence[Prompt], judge: Any, vae: Any) -> list[dict]:
    """The ceiling and chance records of every prompt kind (see the module docstring)."""
    e = cfg.eval
    records = []
    val = load_val_images(e.prompts, prompts, cfg.world.image_size)
    real = ceiling_images(val, vae, cfg.ldm.image_size)
    index = {p.key: i for i, p in enumerate(prompts)}
    for kind in e.kinds:
        ps = prompts_of(prompts, kind)
        images = real[[index[p.key] for p in ps]]
        records += make_records(CEILING, kind, ps, images, judge, seed=e.seed, step=None, out_dir=e.out_dir,
                                save_images=e.grid_prompts)
        perm = chance_permutation(len(ps), e.seed)
        records += make_records(CHANCE, kind, ps, images[perm], judge, seed=e.seed, step=None, out_dir=e.out_dir)
    return records


def checkpoints(run_dir: str, curve: bool) -> list[tuple[str, bool]]:
    """``(checkpoint, final)`` to score: ``last.ckpt``, then every kept periodic one when ``curve``
    (``step<N>.ckpt``, in step order)."""
    folder = Path(run_dir) / "checkpoints"
    periodic = sorted(folder.glob("step*.ckpt"), key=_step_of) if curve else []
    return [(str(folder / "last.ckpt"), True)] + [(str(p), False) for p in periodic]


def _step_of(path: Path) -> int:
    digits = re.sub(r"\D", "", path.stem)
    return int(digits) if digits else -1


@torch.no_grad()
def run_records(cfg: Any, run_dir: str, info: dict, prompts: Sequence[Prompt], judge: Any,
                upsampling: Any = None) -> tuple[list, dict]:
    """Every record of one ldm run and its entries for ``runs.json`` (one per scored checkpoint).

    With ``upsampling`` (:class:`dalle3.eval.upsample.EvalUpsampling`), the final checkpoint is also
    scored on the upsampled short prompts (records of kind ``<kind>_up``).
    """
    from omegaconf import OmegaConf

    from dalle3.ldm.generate import generate_batched, load_trained_parts
    from dalle3.ldm.model import build_sampler

    e = cfg.eval
    name = Path(run_dir).name
    run_cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    if info.get("ldm"):
        run_cfg.ldm = OmegaConf.merge(run_cfg.ldm, info["ldm"])  # the run's own parts and schedule
    records, entries, final_step = [], {}, None
    for ckpt, final in checkpoints(run_dir, e.curve):
        if not final and _step_of(Path(ckpt)) == final_step:
            continue  # the final checkpoint itself: scored with every prompt already
        run_cfg.ldm.generate.ckpt_dir, run_cfg.ldm.generate.checkpoint = run_dir, ckpt
        parts, state = load_trained_parts(run_cfg, use_ema=True)
        step = state.get("global_step")
        final_step = step if final else final_step
        rid = name if final else f"{name}@{step}"
        kinds, n = (e.kinds, len(prompts)) if final else (e.curve_kinds, e.curve_prompts)
        sampler = build_sampler(run_cfg.ldm.noise)
        for kind in kinds:
            ps = prompts_of(prompts, kind)[:n]
            images = generate_batched(parts, sampler, [p.text(kind) for p in ps], guidance=e.guidance,
                                      steps=e.steps, seed=e.seed, batch_size=e.batch_size)
            records += make_records(rid, kind, ps, images, judge, seed=e.seed, step=step, out_dir=e.out_dir,
                                    save_images=e.grid_prompts if final else 0)
        if final and upsampling is not None:
            records += upsampling.records(rid, parts, sampler, prompts, judge, step)
        entries[rid] = run_entry(info, step, final, name)
        log.info("eval: %s step %s scored (%s)", name, step, "final" if final else "curve")
    return records, entries


def run_entry(info: dict, step: Optional[int], final: bool, train_run: str) -> dict:
    """A ``runs.json`` entry of one scored checkpoint of a run with identity ``info`` (run.json)."""
    return {"label": info["label"], "kind": "model", "caption_source": info["caption_source"],
            "synthetic": info["synthetic"], "ratio": info["ratio"], "dsc_share": info["shares"]["dsc"],
            "seed": info["seed"], "step": step, "final": final, "train_run": train_run,
            "config_hash": info["config_hash"], "captioners": info.get("captioners", {})}


def reference_entries() -> dict:
    none = {"caption_source": None, "synthetic": None, "ratio": None, "dsc_share": None, "seed": None,
            "step": None, "final": True, "train_run": None}
    return {CEILING: {**none, "label": "ceiling (val images, resize + VAE)", "kind": CEILING},
            CHANCE: {**none, "label": "chance (another prompt's image)", "kind": CHANCE}}
