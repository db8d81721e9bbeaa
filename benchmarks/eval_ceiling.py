"""Ceiling and chance of the exact prompt-following checks, per prompt kind, on the world's ``val`` split.

Usage: ``python benchmarks/eval_ceiling.py [--vae DIR | --steps N --batch N --lr X [--schedule cos|const]]
[--val N] [--split val|dev] [--save DIR]``

Writes a default world's ``val`` split (64 px, :func:`dalle3.world.writer.write_split`), reads it back
through the data layer, and scores every prompt kind (dsc, ssc, alt) with :mod:`dalle3.eval.checks`:

* ``render``: the 64 px images themselves (1.00 where the prompt is true of its scene);
* ``ceiling``: the images resized to ``ldm.image_size`` and round-tripped through the tiny VAE;
* ``chance``: each prompt against another prompt's ceiling image (a seeded derangement), and the
  exact expectation over all pairs.

Without ``--vae`` it trains ``conf/ldm/tiny.yaml``'s VAE first with the vae stage's module and loss on
2048 train renders (a plain loop: AdamW, gradient clipping as ``trainer.gradient_clip_val``, an
optional cosine decay to 0). Prints a markdown table and, last, a JSON line.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # helpers.vae: the one recipe

KINDS = ("dsc", "ssc", "alt")


def measure(vae, n: int, size: int, seed: int = 0, split: str = "val") -> dict:
    from dalle3.config.schema import WorldConfig
    from dalle3.data.pipeline import build_pipeline
    from dalle3.data.shards import expand_shards
    from dalle3.eval.checks import (applicable_counts, ceiling_images, chance_permutation, check_images,
                                    expected_chance, pass_rates)
    from dalle3.eval.prompts import load_prompts
    from dalle3.world.writer import write_split

    root = tempfile.mkdtemp()
    write_split(root, split, n, 256, WorldConfig(), seed=seed, progress=False)
    prompts, _ = load_prompts(f"{root}/{split}", n)
    found = {s["key"]: s["image"] for s in build_pipeline(expand_shards(f"{root}/{split}"), image_size=64)}
    val = torch.stack([found[p.key] for p in prompts])
    real = ceiling_images(val, vae, size)
    out = {}
    for kind in KINDS:
        idx = [i for i, p in enumerate(prompts) if p.text(kind).strip()]
        texts = [prompts[i].text(kind) for i in idx]
        ceiling = check_images(real[idx], texts)
        chance = check_images(real[idx][chance_permutation(len(idx), seed)], texts)
        out[kind] = {"prompts": len(idx), "applicable": applicable_counts(ceiling),
                     "render": pass_rates(check_images(val[idx], texts)), "ceiling": pass_rates(ceiling),
                     "chance": pass_rates(chance), "chance_expected": expected_chance(real[idx], texts)}
    return out


def table(result: dict) -> str:
    from dalle3.eval.checks import CHECKS

    fmt = lambda v: "n/a" if math.isnan(v) else f"{v:.3f}"
    lines = ["| kind | row | " + " | ".join(CHECKS) + " |", "|---|---|" + "---:|" * len(CHECKS)]
    for kind in KINDS:
        for row in ("render", "ceiling", "chance", "chance_expected"):
            lines.append(f"| {kind} | {row} | " + " | ".join(fmt(result[kind][row][c]) for c in CHECKS) + " |")
    return "\n".join(lines)


def _no_nan(value):
    """NaN (a check no prompt states) as JSON null."""
    if isinstance(value, dict):
        return {k: _no_nan(v) for k, v in value.items()}
    return None if isinstance(value, float) and math.isnan(value) else value


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--vae", help="a saved AutoencoderKL folder (skips training)")
    p.add_argument("--steps", type=int, default=8000)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--schedule", choices=("cos", "const"), default="cos")
    p.add_argument("--val", type=int, default=512, help="prompts (images) of the split to score")
    p.add_argument("--split", default="val", choices=("val", "dev"),
                   help="dev: screening a VAE recipe without touching the held-out val prompts")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--save", help="save the trained VAE here")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.time()
    summary: dict = {"val": args.val, "split": args.split}
    if args.vae:
        from diffusers import AutoencoderKL

        vae = AutoencoderKL.from_pretrained(args.vae).eval()
        summary["vae"] = args.vae
    else:
        from helpers.vae import train_vae

        vae, summary["vae_psnr"] = train_vae(args.steps, args.batch, args.lr, args.schedule)
        summary.update(vae_steps=args.steps, vae_batch=args.batch, vae_lr=args.lr, schedule=args.schedule,
                       train_seconds=round(time.time() - t0, 1))
        if args.save:
            vae.save_pretrained(args.save)
    from dalle3.config import compose

    summary["results"] = measure(vae, args.val, compose(["stage=vae"]).ldm.image_size, split=args.split)
    summary["seconds"] = round(time.time() - t0, 1)
    print(table(summary["results"]))
    print(json.dumps(_no_nan(summary)))


if __name__ == "__main__":
    main()
