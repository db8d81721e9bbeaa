"""Paired difference (bootstrap 95 % interval) of two screens' dev-split scores: same prompts, same noise.

Usage: python benchmarks/screens/paired.py EVAL_DIR_A EVAL_DIR_B [--kinds dsc alt]
Prints one line per (kind, metric) and ends with one JSON line of the differences (A - B).
"""
import argparse
import json

from dalle3.eval.stats import by_run, load_records, paired_diff

p = argparse.ArgumentParser()
p.add_argument("a")
p.add_argument("b")
p.add_argument("--kinds", nargs="+", default=["dsc", "alt"])
p.add_argument("--metrics", nargs="+", default=["clip", "colour", "attribution", "count", "position", "exact"])
args = p.parse_args()


def model_run(records, kind, metric):
    runs = {r: v for r, v in by_run(records, kind, metric).items() if r not in ("ceiling", "chance") and "@" not in r}
    if len(runs) != 1:
        raise SystemExit(f"expected one model run per screen folder, found {sorted(runs)}")
    return next(iter(runs.values()))


ra, rb = load_records(args.a), load_records(args.b)
out = {"a": args.a, "b": args.b}
for kind in args.kinds:
    for metric in args.metrics:
        try:
            d = paired_diff(model_run(ra, kind, metric), model_run(rb, kind, metric))
        except (StopIteration, KeyError):
            continue
        if not d.get("n"):
            continue
        out[f"{kind}.{metric}"] = [round(d["diff"], 3), round(d["lo"], 3), round(d["hi"], 3)]
        print(f"{kind:4s} {metric:12s} {d['diff']:+.3f} [{d['lo']:+.3f}, {d['hi']:+.3f}] n={d['n']}")
print(json.dumps(out))
