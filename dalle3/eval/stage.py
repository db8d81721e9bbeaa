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
    prompts, skips = load_prompts(e.prompts, e.num_prompts)
    if len(prompts) < 2:
        raise ConfigError(f"eval.prompts={e.prompts!r} holds {len(prompts)} readable samples; allowed: at least 2")
    t0 = time.time()
    judge = load_judge(cfg)
    os.makedirs(e.out_dir, exist_ok=True)
    records = reference_records(cfg, prompts, judge, load_vae(cfg.ldm.vae))
    entries = reference_entries()
    for run in runs:
        log.info("eval: scoring %s (%s) on %d prompts of each kind", run, infos[run]["label"], len(prompts))
        recs, ents = run_records(cfg, run, infos[run], prompts, judge)
        records += recs
        entries.update(ents)
    atomic_write_text(os.path.join(e.out_dir, "records.jsonl"), "".join(_json_line(r) for r in records))
    atomic_write_json(os.path.join(e.out_dir, "runs.json"), entries, indent=1)
    atomic_write_json(os.path.join(e.out_dir, "judge.json"), judge.validation, indent=1)
    recall = recaption_recall(e.recaptions) if e.recaptions and os.path.isdir(e.recaptions) else None
    if recall is not None:
        atomic_write_json(os.path.join(e.out_dir, "captioners.json"), recall, indent=1)
    report = write_report(e.out_dir)
    return {"out_dir": str(e.out_dir), "report": str(report), "runs": len(runs), "prompts": len(prompts),
            "skipped": skips.total, "records": len(records), "seconds": round(time.time() - t0, 1)}


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


def run_report(cfg: Any) -> dict:
    """Rebuild ``<eval.out_dir>/report/index.html`` from the evaluation's records (stage=report)."""
    from dalle3.eval.report import write_report

    out = cfg.eval.out_dir
    if not os.path.isfile(os.path.join(out, "records.jsonl")):
        raise ConfigError(f"eval.out_dir={out!r} holds no records.jsonl; allowed: the folder `dalle3-eval` wrote")
    return {"report": str(write_report(out))}
