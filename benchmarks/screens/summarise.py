"""Print one screen's dev-split scores: per prompt kind, CLIP and exact checks of the run, ceiling and chance."""
import argparse
import json
from pathlib import Path

from dalle3.eval.stats import by_run, load_records, mean_ci

p = argparse.ArgumentParser()
p.add_argument("eval_dir")
p.add_argument("--name", default="")
p.add_argument("--train-seconds", type=float, default=None)
p.add_argument("--eval-seconds", type=float, default=None)
a = p.parse_args()
recs = load_records(a.eval_dir)
metrics = ["clip", "count", "colour", "attribution", "shape", "size", "position", "exact"]
out = {"screen": a.name, "train_s": a.train_seconds, "eval_s": a.eval_seconds}
for kind in sorted({r["kind"] for r in recs}):
    for m in metrics:
        for run, vals in by_run(recs, kind, m).items():
            ci = mean_ci(vals.values(), n_boot=200)
            if ci["n"]:
                tag = run if run in ("ceiling", "chance") else "model"
                out[f"{kind}.{m}.{tag}"] = round(ci["mean"], 3)
print(json.dumps(out))
