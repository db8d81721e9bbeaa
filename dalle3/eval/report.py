"""The evaluation's outputs: a markdown table and a plot of every run's metrics."""
from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Optional, Sequence

from dalle3.eval.follow import CHECKS

COLUMNS = ("clip_alt", "clip_dsc", *[f"follow_{c}" for c in CHECKS])


def run_label(run_dir: str) -> dict:
    """Caption setting of an ldm run from its folder name (``{source}_{synthetic}{ratio}``)."""
    name = Path(run_dir).name
    m = re.fullmatch(r"(alt|ssc|dsc|blend)_(ssc|dsc)([0-9.]+)", name)
    if not m:
        return {"run": name, "source": name, "share": None}
    source, synthetic, ratio = m.group(1), m.group(2), float(m.group(3))
    share = {"alt": 0.0, "ssc": 1.0, "dsc": 1.0, "blend": ratio}[source]
    label = {"alt": "alt", "ssc": "ssc", "dsc": "dsc"}.get(source, f"{ratio:.0%} {synthetic}")
    return {"run": label, "source": source, "synthetic": synthetic if source != "alt" else None, "share": share}


def _fmt(v: Optional[float]) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}" if v <= 1 else f"{v:.2f}"


def markdown_table(rows: Sequence[dict]) -> str:
    head = "| run | steps | " + " | ".join(COLUMNS) + " |"
    sep = "|---|---:|" + "---:|" * len(COLUMNS)
    lines = [head, sep]
    for r in rows:
        lines.append(f"| {r['run']} | {r.get('step', '')} | " + " | ".join(_fmt(r.get(c)) for c in COLUMNS) + " |")
    return "\n".join(lines)


def plot(rows: Sequence[dict], path: str) -> str:
    """Bars per run for CLIP score (left) and prompt-following checks (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = sorted(rows, key=lambda r: (r.get("share") is None, r.get("share") or 0, r["run"]))
    names = [r["run"] for r in rows]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    width = 0.8 / 2
    for i, key in enumerate(("clip_alt", "clip_dsc")):
        ax1.bar([x + i * width for x in range(len(rows))], [r.get(key) or 0 for r in rows], width, label=key)
    ax1.set_xticks([x + width / 2 for x in range(len(rows))], names, rotation=20)
    ax1.set_title("CLIP score (prompted with alt-text / DSC)")
    ax1.legend()
    width = 0.8 / len(CHECKS)
    for i, c in enumerate(CHECKS):
        ax2.bar([x + i * width for x in range(len(rows))], [r.get(f"follow_{c}") or 0 for r in rows], width, label=c)
    ax2.set_xticks([x + 0.4 - width / 2 for x in range(len(rows))], names, rotation=20)
    ax2.set_ylim(0, 1)
    ax2.set_title("Prompt following on DSC prompts (share of images)")
    ax2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
