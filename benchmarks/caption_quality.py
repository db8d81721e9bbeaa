"""Caption quality of the alt, SSC and DSC captioners on the synthetic world's ``val`` split.

Usage: ``python benchmarks/caption_quality.py [--out DIR] [--pretrain-steps N] [--ssc-steps N]
[--dsc-steps N] [--dsc-batch N] [--devices N] [--reuse] [--val N] [hydra overrides...]``

Runs the real stages, in order, as ``dalle3-train`` would (composed root config, tiny
captioner): ``data`` (if the world is missing), ``captioner_pretrain`` (alt-text),
``captioner_finetune`` with ``captioner.target=ssc`` and ``=dsc``. Then captions ``val``
greedily with each export and scores the captions against the scene graphs
(:mod:`dalle3.captioner.evaluate`): recall / false rate per fact category. Prints a
markdown table and, last, a JSON line. ``--reuse`` skips a stage whose export exists.
``--devices 2`` trains each stage with 2 DDP ranks on the CPU (torchrun, ``trainer=ddp``, one thread each).
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch


def stage_overrides(args: argparse.Namespace) -> list[str]:
    return [f"experiment={args.experiment}", f"paths.data_dir={args.out}/world", f"paths.out_dir={args.out}/runs",
            "trainer.progress_bar=false", *args.overrides]


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (the data-loader workers)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def train(args: argparse.Namespace, stage: str, steps: int, extra: list[str]) -> dict:
    from dalle3.config import compose
    from dalle3.stages import run_stage

    if steps is None:  # the stage's own length: the preset's captioner.pretrain_steps / finetune_steps
        steps = int(compose([f"stage={stage}", *stage_overrides(args), *extra]).trainer.max_steps)
    cfg = compose([f"stage={stage}", *stage_overrides(args), f"trainer.max_steps={steps}",
                   f"trainer.val_check_interval={steps}", *extra])
    export = Path(cfg.paths.run_dir) / "export"
    if args.reuse and (export / "open_clip_model.safetensors").exists():
        print(f"{stage} {extra}: reusing {export}", flush=True)
        return {"export": str(export), "seconds": 0.0, "steps": steps, "reused": True}
    t0, c0 = time.time(), cpu_seconds()
    if args.devices > 1:
        summary = train_ddp(args, [f"stage={stage}", *stage_overrides(args), f"trainer.max_steps={steps}",
                                   f"trainer.val_check_interval={steps}", *extra])
    else:
        summary = run_stage(cfg)
    summary["seconds"], summary["cpu_seconds"] = round(time.time() - t0, 1), round(cpu_seconds() - c0, 1)
    print(f"{stage} {extra}: {steps} steps in {summary['seconds']} s wall, {summary['cpu_seconds']} s CPU, "
          f"train loss {summary.get('train/loss')}, val loss {summary.get('val/loss')}", flush=True)
    summary["steps"] = steps
    return summary


def train_ddp(args: argparse.Namespace, overrides: list[str]) -> dict:
    """One stage as ``torchrun ... dalle3-train ... trainer=ddp`` with ``args.devices`` CPU ranks
    (torchrun starts them together, so they import in parallel; it sets OMP_NUM_THREADS=1);
    rank 0's summary line."""
    bin_dir = Path(sys.executable).parent
    cmd = [str(bin_dir / "torchrun"), "--standalone", f"--nproc_per_node={args.devices}", str(bin_dir / "dalle3-train"),
           *overrides, "trainer=ddp", "trainer.accelerator=cpu", f"trainer.devices={args.devices}"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith('{"stage"')]
    return next(line for line in lines if line.get("rank", 0) == 0)


def ensure_world(args: argparse.Namespace) -> None:
    from dalle3.config import compose
    from dalle3.stages import run_stage

    if not (Path(args.out) / "world" / "val").exists():
        t0 = time.time()
        run_stage(compose(["stage=world", *stage_overrides(args)]))
        print(f"world written in {time.time() - t0:.0f} s", flush=True)


def evaluate(export: str, args: argparse.Namespace) -> dict:
    """Greedy captions of ``args.val`` val images, scored against their scenes."""
    from dalle3.captioner.evaluate import caption_batches, count_breakdown, evaluate_captions
    from dalle3.captioner.export import load_exported
    from dalle3.captioner.generate import CaptionGenerator, DecodeOptions
    from dalle3.config import compose
    from dalle3.data.datamodule import ShardDataModule

    cfg = compose(["stage=captioner_pretrain", *stage_overrides(args), f"data.val_samples={args.val}",
                   "data.num_workers=1"])
    cap = load_exported(export)
    generator = CaptionGenerator(cap.model, cap.tokenizer, DecodeOptions(max_new_tokens=79))
    loader = ShardDataModule(cfg.data, cfg.caption, seed=0).val_dataloader()
    t0 = time.time()
    generated, scenes, _ = caption_batches(generator, loader, max_samples=args.val)
    result = evaluate_captions(generated, scenes)
    result["_meta"] = {"images": len(generated), "decode_s": round(time.time() - t0, 1), "example": generated[:3],
                       "count_breakdown": count_breakdown(generated, scenes)}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="outputs/caption_quality")
    parser.add_argument("--experiment", default="captioner_quality", help="conf/experiment/ delta")
    parser.add_argument("--pretrain-steps", type=int, default=None, help="default: the preset's captioner.pretrain_steps")
    parser.add_argument("--ssc-steps", type=int, default=None, help="default: the preset's captioner.finetune_steps.ssc")
    parser.add_argument("--dsc-steps", type=int, default=None, help="default: the preset's captioner.finetune_steps.dsc")
    parser.add_argument("--dsc-batch", type=int, default=None, help="global batch of the DSC fine-tune only "
                        "(default: the experiment's data.global_batch_size)")
    parser.add_argument("--val", type=int, default=512, help="val images to caption")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--devices", type=int, default=1,
                        help="CPU ranks per training stage (>1: DDP with gloo, dalle3-train under torchrun)")
    parser.add_argument("--reuse", action="store_true")
    parser.add_argument("overrides", nargs="*", help="hydra overrides for every stage")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from dalle3.captioner.evaluate import quality_table

    ensure_world(args)
    runs = {"alt": train(args, "captioner_pretrain", args.pretrain_steps, []),
            "ssc": train(args, "captioner_finetune", args.ssc_steps, ["captioner.target=ssc"]),
            "dsc": train(args, "captioner_finetune", args.dsc_steps, ["captioner.target=dsc", *(
                [f"data.global_batch_size={args.dsc_batch}"] if args.dsc_batch else [])])}
    results = {name: evaluate(run["export"], args) for name, run in runs.items()}
    table = quality_table({n: {k: v for k, v in r.items() if k != "_meta"} for n, r in results.items()})
    print(table)
    for name, r in results.items():
        print(f"{name}: {r['_meta']}")
    print("DSC count recall by kind of colour-shape group (wrong_count: stated with another count; "
          "unnamed: colour and shape never stated with a count):")
    for kind, v in results["dsc"]["_meta"]["count_breakdown"].items():
        print(f"  {kind}: {v['groups']} groups, recall {v['recall']:.2f}, wrong count {v['wrong_count']:.2f}, "
              f"unnamed {v['unnamed']:.2f}")
    train_s = sum(float(r.get("seconds", 0)) for r in runs.values())
    train_cpu = sum(float(r.get("cpu_seconds", 0)) for r in runs.values())
    print(json.dumps({"benchmark": "caption_quality", "train_seconds": round(train_s, 1),
                      "train_cpu_seconds": round(train_cpu, 1),
                      "devices": args.devices,
                      "steps": {name: run["steps"] for name, run in runs.items()},
                      "dsc_batch": args.dsc_batch,
                      "results": {n: {k: v for k, v in r.items() if k != "_meta"} for n, r in results.items()},
                      "dsc_count_by_kind": {k: round(v["recall"], 3) for k, v in
                                            results["dsc"]["_meta"]["count_breakdown"].items()}},
                     default=lambda x: None))


if __name__ == "__main__":
    main()
