"""The report's figures, drawn from the numbers of ``report.json`` (matplotlib, Agg, no pyplot).

Each function takes the part of the report it plots and a path, draws one PNG and returns
the path, or ``None`` when there is nothing to plot. They use :class:`matplotlib.figure.Figure`
directly, so no global backend or pyplot state is touched.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

from matplotlib.figure import Figure

CHECK_NAMES = ("count", "colour", "attribution", "shape", "size", "position", "exact")
_REFERENCE_STYLE = {"ceiling": {"color": "0.35", "hatch": "//"}, "chance": {"color": "0.75", "hatch": ".."}}


def _colour(i: int) -> str:
    return f"C{i % 10}"


def _err(ci: dict) -> tuple[float, float]:
    """Distances from the mean to the interval's ends, as errorbar wants them."""
    return ci["mean"] - ci["lo"], ci["hi"] - ci["mean"]


def _save(fig: Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


def steps_figure(steps: dict, path: Path) -> Optional[Path]:
    """Figure 4 analogue: judge CLIP score against training step, a panel per prompt kind.

    Args:
        steps: ``{kind: {train_run: {"label", "points": [{"step", "clip": ci}]}}}``.
    """
    kinds = [k for k, lines in steps.items() if any(line["points"] for line in lines.values())]
    if not kinds:
        return None
    fig = Figure(figsize=(4.2 * len(kinds), 3.4))
    for j, kind in enumerate(kinds):
        ax = fig.add_subplot(1, len(kinds), j + 1)
        for i, (train_run, line) in enumerate(steps[kind].items()):
            pts = [p for p in line["points"] if p["clip"]["n"]]
            if not pts:
                continue
            x = [p["step"] for p in pts]
            ax.plot(x, [p["clip"]["mean"] for p in pts], "o-", color=_colour(i), label=line["label"])
            ax.fill_between(x, [p["clip"]["lo"] for p in pts], [p["clip"]["hi"] for p in pts],
                            color=_colour(i), alpha=0.15, linewidth=0)
        ax.set_title(f"{kind} prompts")
        ax.set_xlabel("training step")
        ax.set_ylabel("judge CLIP score")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return _save(fig, path)


def share_figure(share: dict, path: Path) -> Optional[Path]:
    """Figure 5 analogue: judge CLIP score against the share of DSC captions in training.

    Args:
        share: ``{kind: [{"label", "dsc_share", "synthetic", "clip": ci}]}`` of final runs.
    """
    kinds = [k for k, pts in share.items() if any(p["clip"]["n"] for p in pts)]
    if not kinds:
        return None
    fig = Figure(figsize=(4.2 * len(kinds), 3.4))
    for j, kind in enumerate(kinds):
        ax = fig.add_subplot(1, len(kinds), j + 1)
        pts = [p for p in share[kind] if p["clip"]["n"]]
        # Runs blended with SSC sit at share 0 too; they get their own marker, not the line.
        dsc = sorted((p for p in pts if p.get("synthetic") != "ssc"), key=lambda p: p["dsc_share"])
        ssc = [p for p in pts if p.get("synthetic") == "ssc"]
        for group, fmt, colour in ((dsc, "o-", "C0"), (ssc, "s", "C1")):
            if group:
                yerr = list(zip(*[_err(p["clip"]) for p in group]))
                ax.errorbar([p["dsc_share"] for p in group], [p["clip"]["mean"] for p in group], yerr=yerr,
                            fmt=fmt, color=colour, capsize=3)
                for p in group:
                    ax.annotate(p["label"], (p["dsc_share"], p["clip"]["mean"]), fontsize=7,
                                xytext=(4, 4), textcoords="offset points")
        ax.set_title(f"{kind} prompts")
        ax.set_xlabel("share of DSC captions in training")
        ax.set_ylabel("judge CLIP score")
        ax.grid(alpha=0.3)
    return _save(fig, path)


def categories_figure(rows: Sequence[dict], kind: str, path: Path) -> Optional[Path]:
    """Per-category pass rates (GenEval / SD3 Table 4 analogue), a bar per run, ceiling and chance hatched.

    Args:
        rows: the score table of one prompt kind, ``[{"run", "label", "role", "cells": {metric: ci}}]``.
    """
    cats = [c for c in CHECK_NAMES if any(r["cells"][c]["n"] for r in rows)]
    if not cats or not rows:
        return None
    fig = Figure(figsize=(max(6.0, 1.1 * len(cats) * max(1, len(rows)) / 3), 3.6))
    ax = fig.add_subplot(1, 1, 1)
    width = 0.8 / len(rows)
    models = 0
    for i, r in enumerate(rows):
        style = _REFERENCE_STYLE.get(r["role"])
        if style is None:
            style, models = {"color": _colour(models)}, models + 1
        xs, ys, errs = [], [], []
        for x, c in enumerate(cats):
            ci = r["cells"][c]
            if ci["n"]:
                xs.append(x - 0.4 + width * (i + 0.5))
                ys.append(100 * ci["mean"])
                errs.append(tuple(100 * e for e in _err(ci)))
        ax.bar(xs, ys, width, yerr=list(zip(*errs)) if errs else None, label=r["label"], capsize=2,
               edgecolor="0.2", linewidth=0.4, **style)
    ax.set_xticks(range(len(cats)), cats)
    ax.set_ylim(0, 100)
    ax.set_ylabel("prompts passing (%)")
    ax.set_title(f"Prompt-following checks on {kind} prompts")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside: bars reach 100%
    return _save(fig, path)
