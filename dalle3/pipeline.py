"""`dalle3-pipeline`: the whole recipe on one machine, stage after stage.

Usage: ``dalle3-pipeline [hydra overrides...]`` (the overrides apply to every step).
Each step composes the real root config with its own ``stage=`` and step overrides,
exactly as the per-stage command would, so a pipeline step and a cluster job of the
same stage run the same code. A step can hand overrides to every later step (its
``carry``), e.g. the recaption step points later steps at the captions it wrote.
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from dalle3.config import ConfigError, compose, register_configs
from dalle3.stages import get_stage, run_stage
from dalle3.utils.logging import get_logger

log = get_logger("dalle3.pipeline")


def quote(value: str) -> str:
    """``value`` as a quoted Hydra override value (commas, brackets and quotes survive)."""
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


def recaption_carry(cfg: Any, carried: list[str]) -> list[str]:
    """What later steps read once the recaption step has run: the synthetic captions it wrote.

    ``recaption.mode=shards`` writes new shards, which become ``data.train_shards``;
    ``sidecar`` writes caption files beside the unchanged input, joined through ``data.sidecar_dir``.
    """
    rc = cfg.recaption
    if rc.mode == "shards":
        return ["data.train_shards=${recaption.out_dir}"]
    carry = ["data.sidecar_dir=${recaption.out_dir}"]
    if rc.input_shards != cfg.data.train_shards:  # recaption.input_shards was set apart from data.train_shards
        carry.append(f"data.train_shards={quote(rc.input_shards)}")
    return carry


def ldm_carry(cfg: Any, carried: list[str]) -> list[str]:
    """The evaluation scores the ldm runs of this pipeline, and only those (``eval.runs``)."""
    previous = [c for c in carried if c.startswith("eval.runs=")]
    runs = previous[-1][len("eval.runs=["):-1] if previous else ""
    return [f"eval.runs=[{runs + ',' if runs else ''}{quote(cfg.ldm.run_dir)}]"]


@dataclass(frozen=True)
class Step:
    stage: str
    overrides: tuple[str, ...] = field(default_factory=tuple)
    label: str = ""
    carry: Optional[Callable[[Any, list[str]], list[str]]] = None
    "Overrides for every later step once this one has run, from this step's composed config and the carry so far."

    @property
    def name(self) -> str:
        return self.label or self.stage


# The DALL-E 3 recipe in order (PAPER.md "The pipeline").
STEPS: tuple[Step, ...] = (
    Step("world"),
    # The judge CLIP of the evaluation learns from the judge split only, which no captioner
    # and no ldm ever sees.
    Step("judge"),
    Step("captioner_pretrain"),
    Step("captioner_finetune", ("captioner.target=ssc",), "captioner_finetune_ssc"),
    Step("captioner_finetune", ("captioner.target=dsc",), "captioner_finetune_dsc"),
    # Once recaptioned, later stages read the synthetic captions the captioners wrote
    # instead of the world's ground-truth ones.
    Step("recaption", carry=recaption_carry),
    Step("vae"),
    Step("latents"),
    Step("ldm", ("caption=alt",), "ldm_alt", carry=ldm_carry),
    Step("ldm", ("caption=blend",), "ldm_blend_dsc95", carry=ldm_carry),
    Step("eval"),
)


def run_pipeline(overrides: list[str], steps: tuple[Step, ...] = STEPS) -> list[dict]:
    """Run every step; return one record per step (status, seconds, summary)."""
    register_configs()
    records, carried = [], []
    for step in steps:
        get_stage(step.stage)  # a typo in a custom step list fails before any work
    for step in steps:
        record = {"step": step.name, "stage": step.stage}
        t0 = time.time()
        log.info("step %s: starting", step.name)
        cfg = compose([f"stage={step.stage}", *carried, *overrides, *step.overrides])
        record.update(status="done", summary=run_stage(cfg))
        if step.carry is not None:
            carried.extend(step.carry(cfg, carried))
        record["seconds"] = round(time.time() - t0, 1)
        log.info("step %s: done in %.1f s", step.name, record["seconds"])
        records.append(record)
    return records


def print_report(records: list[dict]) -> None:
    print("\n== dalle3 pipeline ==")
    for r in records:
        print(f"  {r['step']:<26} {r['status']:<8} {r.get('seconds', 0):7.1f} s")
    print(json.dumps({"pipeline": [{k: v for k, v in r.items() if k != "summary"} for r in records]}))


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in args):
        print(__doc__)
        return
    try:
        records = run_pipeline(args)
    except ConfigError as exc:
        print(f"dalle3-pipeline: {exc}", file=sys.stderr)
        sys.exit(2)
    print_report(records)


if __name__ == "__main__":
    main()
