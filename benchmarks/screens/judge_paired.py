"""Paired difference of two world judges' sensitivity on the same held-out pairs (bootstrap 95 % intervals).

Both judges score the same (image, DSC caption) pairs of ``--split`` (the screens use ``dev``,
never ``val``) against the same one-fact edits (:func:`dalle3.eval.judge.sensitivity_pairs`),
so the difference per kind is paired pair by pair.

Usage: python benchmarks/screens/judge_paired.py EXPORT_A EXPORT_B [--split data/world/dev] [--n 512]
Prints one line per kind (A, B, A - B with its interval) and ends with one JSON line.
"""
from __future__ import annotations

import argparse
import json

import torch

from dalle3.config import compose
from dalle3.eval.judge import JudgeScorer, load_val_pairs, sensitivity_pairs
from dalle3.eval.stats import paired_diff


def per_pair_wins(export: str, images: torch.Tensor, captions: list[str]) -> dict[str, dict[int, float]]:
    cfg = compose([f"eval.judge.export={export}"])
    judge = JudgeScorer.from_config(cfg.eval.judge)
    with torch.no_grad():
        _, pairs = sensitivity_pairs(judge, images, captions)
    return {kind: {int(i): float(w) for i, w in zip(p[0].tolist(), p[1].tolist())}
            for kind, p in pairs.items() if p is not None}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument("--split", default="data/world/dev")
    p.add_argument("--n", type=int, default=512)
    p.add_argument("--image-size", type=int, default=32)
    args = p.parse_args()
    images, captions = load_val_pairs(args.split, args.n, args.image_size)
    wa, wb = per_pair_wins(args.a, images, captions), per_pair_wins(args.b, images, captions)
    out: dict = {"a": args.a, "b": args.b, "split": args.split, "pairs": len(captions)}
    for kind in wa:
        d = paired_diff(wa[kind], wb[kind])
        sa, sb = sum(wa[kind].values()) / len(wa[kind]), sum(wb[kind].values()) / len(wb[kind])
        out[kind] = {"a": round(sa, 3), "b": round(sb, 3), "diff": [round(d["diff"], 3), round(d["lo"], 3),
                                                                    round(d["hi"], 3)], "n": d["n"]}
        print(f"{kind:9s} A {sa:.3f}  B {sb:.3f}  A-B {d['diff']:+.3f} [{d['lo']:+.3f}, {d['hi']:+.3f}] n={d['n']}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
