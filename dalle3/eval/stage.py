"""The eval package's stages: eval (`dalle3-eval`), judge (`dalle3-train stage=judge`), report (`dalle3-report`).

``stage=eval`` scores the ldm runs it is given (``eval.runs``; the pipeline passes its own)
on the held-out ``val`` prompts of every kind (DSC, SSC, alt-text): each image is judged by
the judge CLIP (CLIP score against its prompt) and by the exact checks of what its prompt
states, beside a ceiling and a chance row (:mod:`dalle3.eval.score`). It writes one record
per (run, kind, prompt) to ``records.jsonl``, the runs' identities to ``runs.json``, the
judge's validation to ``judge.json``, the captioners' recall on their recaptions to
``captioners.json``, and the HTML report (:mod:`dalle3.eval.report`).
"""
from __future__ import annotations

import glob
import os
import time
from typing import Any

from dalle3.config.eval import validate_eval
from dalle3.config.validate import ConfigError
from dalle3.utils.io import atomic_write_json, atomic_write_text
from dalle3.utils.logging import get_logger

log = get_logger(__name__)


def resolve_runs(cfg: Any) -> list[str]:
    """``eval.runs`` with globs expanded; each must be an ldm run folder with its run.json."""
    from dalle3.ldm.run_info import RUN_FILE

    runs: list[str] = []
    for spec in cfg.eval.runs:
        found = sorted(p for p in glob.glob(spec) if os.path.isfile(os.path.join(p, RUN_FILE))) \
            if glob.has_magic(spec) else [spec]
        runs += [r for r in found if r not in runs]
    if not runs:
        raise ConfigError("eval.runs names no ldm run; allowed: a list of ldm run folders (with run.json), e.g. "
                          "eval.runs=[outputs/ldm/alt_dsc0.95_seed0] or 'eval.runs=[outputs/ldm/*]'")
    for run in runs:
        if not os.path.isfile(os.path.join(run, "checkpoints", "last.ckpt")):
            raise ConfigError(f"eval.runs: {run!r} has no checkpoints/last.ckpt; allowed: a trained ldm run")
    return runs


def load_judge(cfg: Any):
    """The judge of ``eval.judge`` and its validation (computed on val when its export has none)."""
    from dalle3.eval.judge import JudgeScorer, load_val_pairs, validate_judge_model

    judge = JudgeScorer.from_config(cfg.eval.judge)
    if judge.validation is None:
        images, captions = load_val_pairs(cfg.eval.prompts, cfg.eval.judge.val_samples, cfg.ldm.image_size)
        judge.validation = validate_judge_model(judge, images, captions)
    return judge


def check_not_judged_by_own_eyes(run: str, info: dict, judge: Any) -> None:
    """A one-line ConfigError when the run's text encoder is the world judge's own text tower."""
    from dalle3.eval.text_encoder import source_export

    te = (info.get("ldm") or {}).get("text_encoder") or {}
    if judge.model or te.get("kind") != "world_clip" or not te.get("pretrained"):
        return
    made_from = source_export(te["pretrained"]) or te["pretrained"]
    if os.path.realpath(str(made_from)) == os.path.realpath(str(judge.export)):
        raise ConfigError(f"eval.runs: {run!r} conditions on the judge's own text tower ({judge.export!r}); allowed: "
                          "a text encoder of its own (stage=text_encoder), as a model is never graded by its own eyes")


def run_eval(cfg: Any) -> dict:
    """Score every run of ``eval.runs`` with the ceiling and chance rows; write the records and the report."""
    from dalle3.eval.captioners import recaption_recall
    from dalle3.eval.prompts import load_prompts
    from dalle3.eval.report import write_report
    from dalle3.eval.score import reference_entries, reference_records, run_records
    from dalle3.ldm.model import load_vae
    from dalle3.ldm.run_info import read_run_info

    e = cfg.eval
    validate_eval(e)
    runs = resolve_runs(cfg)
    infos = {run: read_run_info(run) for run in runs}
    for run, info in infos.items():
        check_not_judged_by_own_eyes(run, info, e.judge)
    prompts, skips = load_prompts(e.prompts, e.num_prompts)
    if len(prompts) < 2:
        raise ConfigError(f"eval.prompts={e.prompts!r} holds {len(prompts)} readable samples; allowed: at least 2")
    t0 = time.time()
    judge = load_judge(cfg)
    os.makedirs(e.out_dir, exist_ok=True)
    records = reference_records(cfg, prompts, judge, load_vae(cfg.ldm.vae))
    entries = reference_entries()
    upsampling = upsampling_of(cfg)
    for run in runs:
        log.info("eval: scoring %s (%s) on %d prompts of each kind", run, infos[run]["label"], len(prompts))
        recs, ents = run_records(cfg, run, infos[run], prompts, judge, upsampling)
        records += recs
        entries.update(ents)
    atomic_write_text(os.path.join(e.out_dir, "records.jsonl"), "".join(_json_line(r) for r in records))
    atomic_write_json(os.path.join(e.out_dir, "runs.json"), entries, indent=1)
    atomic_write_json(os.path.join(e.out_dir, "judge.json"), judge.validation, indent=1)
    if upsampling is not None:
        atomic_write_json(os.path.join(e.out_dir, "upsample.json"), upsampling.summary(), indent=1)
    recall = recaption_recall(e.recaptions) if e.recaptions and os.path.isdir(e.recaptions) else None
    if recall is not None:
        atomic_write_json(os.path.join(e.out_dir, "captioners.json"), recall, indent=1)
    report = write_report(e.out_dir)
    return {"out_dir": str(e.out_dir), "report": str(report), "runs": len(runs), "prompts": len(prompts),
            "skipped": skips.total, "records": len(records), "seconds": round(time.time() - t0, 1)}


def upsampling_of(cfg: Any):
    """``upsample=true``: the evaluation's upsampler (:mod:`dalle3.eval.upsample`), else None."""
    if not cfg.upsample.enabled:
        return None
    from dalle3.config.upsample import validate_upsample
    from dalle3.eval.upsample import EvalUpsampling

    validate_upsample(cfg.upsample)
    return EvalUpsampling(cfg)


def _json_line(record: dict) -> str:
    import json

    return json.dumps(record, ensure_ascii=False) + "\n"


def run_judge(cfg: Any) -> dict:
    """Train the world judge CLIP on the judge split, export it and validate it on val (stage=judge)."""
    from dalle3.config.eval import validate_judge
    from dalle3.config.schema import validate
    from dalle3.data.shards import validate_shards

    validate(cfg)
    validate_judge(cfg.eval.judge)
    if cfg.eval.judge.model:
        raise ConfigError(f"eval.judge.model={cfg.eval.judge.model!r}: stage=judge trains the world judge; a named "
                          "open_clip model is used as it is; allowed: eval.judge.model=null")
    validate_shards("data.train_shards", cfg.data.train_shards)
    validate_shards("data.val_shards", cfg.data.val_shards)
    from dalle3.eval.judge import train_judge

    return train_judge(cfg)


def run_text_encoder(cfg: Any) -> dict:
    """Train the world CLIP whose text tower is the ldm's text encoder, and convert it (stage=text_encoder).

    The recipe is ``ldm.text_encoder.clip`` (the judge's, two text blocks) on the train split's
    ground-truth alt and DSC captions, validated on ``dev``; the export goes to
    ``<paths.run_dir>/export`` and its text tower, as a ``CLIPTextModel`` folder, to
    ``<paths.run_dir>/converted``: ``ldm.text_encoder.kind=world_clip`` with that folder as
    ``pretrained`` (what the pipeline hands every later step).
    """
    from dalle3.config.eval import validate_judge
    from dalle3.config.ldm import validate_ldm
    from dalle3.config.schema import validate
    from dalle3.data.shards import validate_shards
    from dalle3.eval.judge import train_world_clip
    from dalle3.eval.text_encoder import convert_world_clip

    validate(cfg)
    validate_ldm(cfg.ldm)
    validate_judge(cfg.ldm.text_encoder.clip, key="ldm.text_encoder.clip")
    if cfg.ldm.text_encoder.clip.model:
        raise ConfigError("ldm.text_encoder.clip.model is set: stage=text_encoder trains a world CLIP; allowed: null")
    validate_shards("data.train_shards", cfg.data.train_shards)
    validate_shards("data.val_shards", cfg.data.val_shards)
    summary = train_world_clip(cfg, cfg.ldm.text_encoder.clip, role="text_encoder")
    if "validation" in summary:  # rank 0, once the export is written
        summary["converted"] = convert_world_clip(summary["export"], text_encoder_folder(cfg), cfg.ldm.text_encoder.layer)
    return summary


def text_encoder_folder(cfg: Any) -> str:
    """Where stage=text_encoder (run folder ``paths.run_dir``) writes the converted encoder."""
    from dalle3.eval.text_encoder import CONVERTED_DIR

    return os.path.join(str(cfg.paths.run_dir), CONVERTED_DIR)


def run_report(cfg: Any) -> dict:
    """Rebuild ``<eval.out_dir>/report/index.html`` from the evaluation's records (stage=report)."""
    from dalle3.eval.report import write_report

    out = cfg.eval.out_dir
    if not os.path.isfile(os.path.join(out, "records.jsonl")):
        raise ConfigError(f"eval.out_dir={out!r} holds no records.jsonl; allowed: the folder `dalle3-eval` wrote")
    return {"report": str(write_report(out))}
