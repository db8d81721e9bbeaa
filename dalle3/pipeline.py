"""`dalle3-pipeline`: the whole recipe on one machine, stage after stage.

Usage: ``dalle3-pipeline [pipeline=quick|default|full] [hydra overrides...]`` (the overrides
apply to every step). Each step composes the real root config with its own ``stage=`` and
step overrides, exactly as the per-stage command would, so a pipeline step and a cluster job
of the same stage run the same code. A step can hand overrides to every later step (its
``carry``), e.g. the recaption step points later steps at the captions it wrote.

The ldm runs come from ``conf/pipeline/<name>.yaml`` (:mod:`dalle3.config.pipeline`); they
all share the pipeline's VAE, latent shards and text features. A progress line (step i/N,
its name, elapsed time, estimated time left) goes to stderr at every step, and the run ends
with ``<out_dir>/summary.json`` (:mod:`dalle3.eval.summary`) and the three findings, one line each.
"""
from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence, TextIO

from dalle3.config import ConfigError, compose, register_configs
from dalle3.config.pipeline import resolve_lanes, run_label, run_overrides, validate_pipeline
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


def text_encoder_carry(cfg: Any, carried: list[str]) -> list[str]:
    """What later steps read once the text_encoder step has run: its CLIP's text tower as the ldm's encoder."""
    from dalle3.eval.stage import text_encoder_folder

    return ["ldm.text_encoder.kind=world_clip", f"ldm.text_encoder.pretrained={quote(text_encoder_folder(cfg))}"]


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


# The DALL-E 3 recipe in order (PAPER.md "The pipeline"), up to the ldm runs.
PREFIX: tuple[Step, ...] = (
    Step("world"),
    # The judge CLIP of the evaluation learns from the judge split only, which no captioner
    # and no ldm ever sees.
    Step("judge"),
    # The ldm's frozen text encoder: a world CLIP's text tower, trained on the train split's
    # ground-truth captions before recaption (all ldm runs share it, whatever their captions).
    Step("text_encoder", carry=text_encoder_carry),
    Step("captioner_pretrain"),
    Step("captioner_finetune", ("captioner.target=ssc",), "captioner_finetune_ssc"),
    Step("captioner_finetune", ("captioner.target=dsc",), "captioner_finetune_dsc"),
    # Once recaptioned, later stages read the synthetic captions the captioners wrote
    # instead of the world's ground-truth ones.
    Step("recaption", carry=recaption_carry),
    Step("vae"),
    Step("latents"),
)
# Prompt upsampling (DALL-E 3, section 3), with `pipeline.upsample=true`: the world's upsampler LM;
# the evaluation then also scores the SSC and alt prompts upsampled, against the short prompts themselves.
UPSAMPLE = Step("upsample", carry=lambda cfg, carried: ["upsample.enabled=true"])
EVAL = Step("eval")


def ldm_steps(pipeline_cfg: Any) -> tuple[Step, ...]:
    """One ldm step per run and seed of ``pipeline.runs``, in the listed order."""
    return tuple(Step("ldm", run_overrides(spec, seed), run_label(spec, seed), carry=ldm_carry)
                 for spec in pipeline_cfg.runs for seed in spec.seeds)


def build_steps(pipeline_cfg: Any) -> tuple[Step, ...]:
    """The pipeline's steps: the recipe up to the latents, every ldm run, the evaluation."""
    validate_pipeline(pipeline_cfg)
    return (*PREFIX, *((UPSAMPLE,) if pipeline_cfg.upsample else ()), *ldm_steps(pipeline_cfg), EVAL)


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


# Seconds each stage took in the default `make demo` on 2 CPU cores (benchmarks/RESULTS.md):
# the first estimate of time left, before this machine has timed a run of its own.
REFERENCE_SECONDS = {"world": 10, "judge": 200, "text_encoder": 250, "captioner_pretrain": 40, "captioner_finetune": 300,
                     "recaption": 60, "vae": 360, "latents": 15, "upsample": 270, "ldm": 240, "eval": 300}


class Progress:
    """The live progress line: ``[dalle3-pipeline 3/14] captioner_finetune_ssc | 4m12s elapsed | ~21m left``.

    Time left is the estimate of the steps not yet finished, each from the seconds the same
    step took in this output folder's last run (``summary.json``), else from the stage's
    reference time (:data:`REFERENCE_SECONDS`), scaled by how this run's finished steps
    compared with their estimates.
    """

    def __init__(self, steps: Sequence[Step], previous: Optional[dict] = None, stream: Optional[TextIO] = None,
                 clock: Callable[[], float] = time.time):
        self.steps, self.stream, self.clock = list(steps), stream or sys.stderr, clock
        seen = {s["step"]: s["seconds"] for s in (previous or {}).get("steps", []) if s.get("status") == "done"}
        self.estimate = [float(seen.get(s.name, REFERENCE_SECONDS.get(s.stage, 60))) for s in self.steps]
        self.start = clock()
        self.taken: list[float] = []

    def left(self, i: int, into_step: float = 0.0) -> float:
        """Estimated seconds left while step ``i`` (0-based) has run for ``into_step`` seconds."""
        done_est = sum(self.estimate[:len(self.taken)])
        scale = sum(self.taken) / done_est if self.taken and done_est > 0 else 1.0
        return max(0.0, scale * sum(self.estimate[i:]) - into_step)

    def line(self, i: int, state: str = "") -> str:
        elapsed = self.clock() - self.start
        into = elapsed - sum(self.taken)
        step = self.steps[i]
        text = (f"[dalle3-pipeline {i + 1}/{len(self.steps)}] {step.name} {state}| {_duration(elapsed)} elapsed | "
                f"~{_duration(self.left(i, into if state != 'done ' else 0.0))} left")
        return text

    def show(self, i: int, state: str = "") -> None:
        print(self.line(i, state), file=self.stream, flush=True)

    @contextlib.contextmanager
    def during(self, i: int, every: float = 60.0):
        """Show the line at the start of step ``i``, then every ``every`` seconds until it ends."""
        self.show(i)
        stop = threading.Event()

        def tick():
            while not stop.wait(every):
                self.show(i, "running ")

        thread = threading.Thread(target=tick, name="dalle3-progress", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()

    def finish(self, i: int, seconds: float) -> None:
        self.taken.append(seconds)
        if i + 1 < len(self.steps):
            return
        print(f"[dalle3-pipeline] all {len(self.steps)} steps done in {_duration(sum(self.taken))}",
              file=self.stream, flush=True)


def device_overrides(overrides: Sequence[str], gpu: Optional[bool] = None) -> list[str]:
    """``["trainer.accelerator=gpu"]`` (one device) when a GPU is visible and the user chose no trainer; else nothing."""
    if any(o.lstrip("+~").startswith(("trainer=", "trainer.accelerator=")) for o in overrides):
        return []
    if gpu is None:
        import torch

        gpu = torch.cuda.is_available()
    return ["trainer.accelerator=gpu"] if gpu else []


def lane_groups(steps: Sequence[Step], lanes: int) -> list[tuple[int, list[Step]]]:
    """``(index of the first, steps)`` to run together: up to ``lanes`` consecutive ldm steps, every other step alone."""
    groups: list[tuple[int, list[Step]]] = []
    for i, step in enumerate(steps):
        prev = groups[-1][1] if groups else None
        if prev is not None and lanes > 1 and step.stage == "ldm" and prev[-1].stage == "ldm" and len(prev) < lanes:
            prev.append(step)
        else:
            groups.append((i, [step]))
    return groups


def lane_threads(lanes: int, cores: Optional[int] = None) -> int:
    """Torch threads of each of ``lanes`` processes sharing ``cores`` (default: this machine's)."""
    return max(1, (cores or os.cpu_count() or 1) // lanes)


def run_lanes(steps: Sequence[Step], argvs: Sequence[list[str]], log_dir: str, threads: int) -> list[dict]:
    """Run ``dalle3-train`` once per step, all at once, each with ``threads`` torch threads; return their records.

    Each process logs to ``log_dir/<step>.log``. A failed one fails the pipeline with its
    step name and log path, after the others have finished (so no run is left half-written).
    """
    os.makedirs(log_dir, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    procs, started = [], time.time()
    for step, argv in zip(steps, argvs):
        log_path = os.path.join(log_dir, f"{step.name}.log")
        with open(log_path, "w") as log_file:
            cmd = [sys.executable, "-c", "from dalle3.cli import train_main; train_main()", *argv,
                   f"trainer.cpu_threads={threads}"]
            procs.append((step, log_path, subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, env=env)))
    records, failed = [], []
    for step, log_path, proc in procs:
        rc = proc.wait()
        records.append({"step": step.name, "stage": step.stage, "status": "done" if rc == 0 else "failed",
                        "summary": {"log": log_path, "threads": threads}, "seconds": round(time.time() - started, 1)})
        if rc != 0:
            failed.append(f"{step.name} (exit {rc}; log: {log_path})")
    if failed:
        raise RuntimeError("dalle3-pipeline: step failed: " + ", ".join(failed))
    return records


def run_pipeline(overrides: list[str], steps: Optional[Sequence[Step]] = None, progress: bool = True) -> dict:
    """Run every step; return the summary (see :func:`dalle3.eval.summary.build_summary`), also written to ``summary.json``.

    Args:
        overrides: Hydra overrides for every step (``pipeline=quick``, ``paths.out_dir=...``).
        steps: the steps to run; default: :func:`build_steps` of the composed ``pipeline`` block.
        progress: print the progress line to stderr.
    """
    from dalle3.eval.summary import build_summary, read_summary, write_summary

    register_configs()
    overrides = [*device_overrides(overrides), *overrides]
    root = compose([*overrides])
    pipeline_overrides = list(root.pipeline.overrides)
    if pipeline_overrides:  # e.g. pipeline=quick's experiment=smoke: the step configs are composed with them
        root = compose([*pipeline_overrides, *overrides])
    steps = tuple(steps) if steps is not None else build_steps(root.pipeline)
    for step in steps:
        get_stage(step.stage)  # a typo in a custom step list fails before any work
    out_dir = str(root.paths.out_dir)
    bar = Progress(steps, read_summary(out_dir), stream=None if progress else open(os.devnull, "w"))
    records, carried = [], []
    t_start = time.time()
    for first, group in lane_groups(steps, resolve_lanes(int(root.pipeline.lanes))):
        argvs = [[f"stage={s.stage}", *pipeline_overrides, *carried, *overrides, *s.overrides] for s in group]
        cfgs = [compose(argv) for argv in argvs]
        t0 = time.time()
        for step in group:
            log.info("step %s: starting", step.name)
        with bar.during(first):
            for k in range(1, len(group)):
                bar.show(first + k)
            if len(group) == 1:
                done = [{"step": group[0].name, "stage": group[0].stage, "status": "done",
                         "summary": run_stage(cfgs[0]), "seconds": 0.0}]
                done[0]["seconds"] = round(time.time() - t0, 1)
            else:  # ldm runs side by side: each its own process, the cores shared among them
                done = run_lanes(group, argvs, os.path.join(out_dir, "pipeline_logs"), lane_threads(len(group)))
        for k, (step, cfg, record) in enumerate(zip(group, cfgs, done)):
            if step.carry is not None:
                carried.extend(step.carry(cfg, carried))
            bar.finish(first + k, (time.time() - t0) / len(group))
            bar.show(first + k, "done ")
            log.info("step %s: done in %.1f s", step.name, record["seconds"])
            records.append(record)
    eval_dir = None
    if any(s.stage == "eval" for s in steps):
        eval_dir = str(compose(["stage=eval", *pipeline_overrides, *carried, *overrides]).eval.out_dir)
    summary = build_summary(str(root.pipeline.name), records, eval_dir, seconds=time.time() - t_start)
    write_summary(out_dir, summary)
    return summary


def print_report(summary: dict, stream: Optional[TextIO] = None) -> None:
    """The closing lines: each step's wall time, where the report is, and the three findings."""
    stream = stream or sys.stdout
    print("\n== dalle3 pipeline ==", file=stream)
    for r in summary["steps"]:
        print(f"  {r['step']:<26} {r['status']:<8} {r.get('seconds', 0):7.1f} s", file=stream)
    print(f"  {'total':<26} {'':<8} {summary['seconds']:7.1f} s", file=stream)
    if summary.get("report"):
        print(f"report: {summary['report']}", file=stream)
    print(f"summary: {summary['path']}", file=stream)
    for f in summary.get("findings", []):
        print(f["line"], file=stream)
    print(json.dumps({"pipeline": [{k: v for k, v in r.items() if k != "summary"} for r in summary["steps"]],
                      "findings": [f.get("holds") for f in summary.get("findings", [])]}), file=stream)


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in args):
        print(__doc__)
        return
    try:
        summary = run_pipeline(args)
    except ConfigError as exc:
        print(f"dalle3-pipeline: {exc}", file=sys.stderr)
        sys.exit(2)
    print_report(summary)


if __name__ == "__main__":
    main()
