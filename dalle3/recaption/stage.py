"""The recaption stage (``dalle3-recaption``, ``stage=recaption``): one process's share of the job.

The same command runs on 1 process, under ``torchrun --nproc_per_node=N``, under ``srun``
and as a SLURM job array; the work itself is :mod:`dalle3.recaption.job`.
"""
from __future__ import annotations

import json
import os
import time
from typing import Any

from dalle3.config.recaption import CAPTIONER_KINDS, validate_recaption
from dalle3.config.validate import ConfigError
from dalle3.data.offline import check_unique, completed, input_identity, output_names, path_identity, plan_shards
from dalle3.data.shards import validate_shards
from dalle3.data.sidecar import sidecar_name
from dalle3.dist.env import array_task, dist_env
from dalle3.recaption.job import output_name_fn, process, rank_summary
from dalle3.recaption.summary import merge_and_write, rank_file, write_json
from dalle3.utils.logging import get_logger

log = get_logger("dalle3.recaption")


def check_config(cfg: Any) -> list[str]:
    """Every check of the job before any heavy work; return the input shards."""
    validate_recaption(cfg.recaption)
    return check_inputs(cfg.recaption)


def check_inputs(rc: Any) -> list[str]:
    """The captioner exports and input shards exist, and the output overwrites no input; return the shards."""
    from dalle3.captioner.export import META_FILE, is_export

    for kind in CAPTIONER_KINDS:
        folder = getattr(rc, kind)  # recaption.ssc / recaption.dsc
        if folder and not is_export(folder):
            raise ConfigError(f"recaption.{kind}={folder!r} is not a captioner export (no {META_FILE}); allowed: "
                              f"the export of `dalle3-train stage=captioner_finetune captioner.target={kind}`, or null")
    shards = validate_shards("recaption.input_shards", rc.input_shards)
    try:
        output_names(shards) if rc.mode == "shards" else check_unique({s: sidecar_name(s) for s in shards})
    except ValueError as exn:
        hint = "" if rc.mode == "shards" else \
            " (sidecars are found by the shard's base name); allowed: recaption.mode=shards, or distinct base names"
        raise ConfigError(f"recaption.input_shards={rc.input_shards!r}: {exn}{hint}") from None
    out = os.path.realpath(rc.out_dir)
    if rc.mode == "shards" and any(os.path.dirname(os.path.realpath(s)) == out for s in shards):
        raise ConfigError(f"recaption.out_dir={rc.out_dir!r} holds input shards, which mode=shards would overwrite; "
                          "allowed: another folder, or recaption.mode=sidecar")
    return shards


def run_recaption(cfg: Any) -> dict:
    """Recaption this process's share of ``recaption.input_shards``; return its summary.

    A shard finished earlier is skipped only if its manifest entry was made from the same
    input shard (path, size, mtime) and the same captioner exports; otherwise it is redone.

    The return value is this rank's summary plus ``"job"``: the merged summary of every
    rank's latest attempt (also written to ``<out_dir>/summary.json``).
    """
    shards = check_config(cfg)
    rc = cfg.recaption
    started = time.time()
    env, task = dist_env(use_torch=False), array_task()
    name_fn = output_name_fn(rc.mode)
    os.makedirs(rc.out_dir, exist_ok=True)
    captioners = {kind: path_identity(getattr(rc, kind)) for kind in CAPTIONER_KINDS if getattr(rc, kind)}
    plan = plan_shards(shards, rc.out_dir, env, task, overwrite=rc.overwrite, name_fn=name_fn,
                       identity=lambda shard: input_identity(shard, captioners=captioners))
    log.info("recaption: task %d/%d rank %d/%d owns %d of %d shards, %d already done from the same input, "
             "%d redone because their input or captioners changed", task.task_id, task.task_count, env.rank,
             env.world_size, len(plan.mine), len(shards), len(plan.skipped), len(plan.changed))
    job, captioned = process(plan, rc, env, task) if plan.todo else (None, 0)
    mine = rank_summary(plan, job, env, task, started, time.time(), captioned)
    write_json(rank_file(rc.out_dir, task.task_id, env.rank), mine)
    names = set(plan.names.values())
    merged = merge_and_write(rc.out_dir, env.world_size, task.task_count, len(shards),
                             lambda: len(names & set(completed(rc.out_dir))))
    log.info("recaption: rank done: %s", json.dumps({k: v for k, v in mine.items() if k != "failed_shards"}))
    return {"out_dir": str(rc.out_dir), "mode": rc.mode, **mine, "job": merged}
