"""The report's static HTML page, rendered from the numbers of ``report.json``.

No external assets and no JavaScript needed to read it. One small inline script only
writes, after load, how many images and tables rendered into ``#render-status`` (the
browser test reads it; a reader sees "images loaded: n / n").
"""
from __future__ import annotations

from html import escape
from typing import Optional
from urllib.parse import quote

CHECK_HELP = {
    "clip": "judge CLIP score, 100 x cosine(image, prompt)",
    "count": "as many objects as the prompt says",
    "colour": "every prompted colour appears",
    "attribution": "every prompted colour is on its shape",
    "shape": "every prompted shape appears",
    "size": "prompted sizes are right",
    "position": "objects are where the prompt puts them",
    "exact": "all of the above, nothing extra",
}

_CSS = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1300px;padding:0 1em;color:#222;line-height:1.4}
table{border-collapse:collapse;margin:.6em 0 1.4em}th,td{border:1px solid #ccc;padding:3px 7px;font-size:13px}
th{background:#f2f2f2}td.num{text-align:right;white-space:nowrap}.n{color:#888;font-size:11px}.ci{font-size:11px}.scores td:first-child,.comparisons td:first-child{white-space:nowrap}
tr.ref td{background:#fafafa;color:#555}.sig{font-weight:bold}.pos{color:#1a6e1a}.neg{color:#a01818}
figure{margin:1em 0}.wide{overflow-x:auto}figcaption,.caption{color:#555;font-size:13px;max-width:900px}
.grid td{text-align:center;vertical-align:top}.grid img{width:128px;height:128px;image-rendering:pixelated}
.prompt{text-align:left!important;font-size:12px;color:#444;background:#fcfcf4}img.broken{outline:3px solid red}
"""

_STATUS_JS = """<script>
window.addEventListener('load', function () {
  var ims = document.images, ok = 0, tabs = document.querySelectorAll('table'), shown = 0;
  for (var i = 0; i < ims.length; i++) if (ims[i].complete && ims[i].naturalWidth > 0) ok++;
  for (var j = 0; j < tabs.length; j++) if (tabs[j].getBoundingClientRect().height > 0 && tabs[j].rows.length > 1) shown++;
  var s = document.getElementById('render-status');
  s.setAttribute('data-images', ims.length); s.setAttribute('data-images-ok', ok);
  s.setAttribute('data-tables', tabs.length); s.setAttribute('data-tables-ok', shown);
  s.textContent = 'images loaded: ' + ok + ' / ' + ims.length + '; tables rendered: ' + shown + ' / ' + tabs.length;
});
</script>"""


def _num(v: Optional[float], metric: str, signed: bool = False) -> str:
    if v is None:
        return "n/a"
    if metric == "clip":
        return f"{v:+.2f}" if signed else f"{v:.2f}"
    return f"{100 * v:+.1f}" if signed else f"{100 * v:.1f}%"


def ci_cell(ci: dict, metric: str) -> str:
    if not ci["n"]:
        return '<td class="num">n/a</td>'
    return (f'<td class="num"><b>{_num(ci["mean"], metric)}</b><br><span class="ci">[{_num(ci["lo"], metric).rstrip("%")}, '
            f'{_num(ci["hi"], metric).rstrip("%")}]</span> <span class="n">n={ci["n"]}</span></td>')


def diff_cell(d: dict, metric: str) -> str:
    if not d["n"]:
        return '<td class="num">n/a</td>'
    sig = d["lo"] > 0 or d["hi"] < 0
    cls = "num" + (" sig " + ("pos" if d["diff"] > 0 else "neg") if sig else "")
    return (f'<td class="{cls}">{_num(d["diff"], metric, True)}<br><span class="ci">[{_num(d["lo"], metric, True)}, '
            f'{_num(d["hi"], metric, True)}]</span> <span class="n">n={d["n"]}</span></td>')


def _head(cols) -> str:
    return "<tr>" + "".join(f"<th>{escape(str(c))}</th>" for c in cols) + "</tr>"


def _img(src: str, alt: str, extra: str = "") -> str:
    src = quote(src)
    return (f'<a href="{src}"><img src="{src}" alt="{escape(alt)}" {extra} '
            "onerror=\"this.classList.add('broken')\"></a>")


def runs_section(rep: dict) -> str:
    cols = ("run", "label", "kind", "caption source", "synthetic", "ratio", "DSC share", "seed", "step", "final",
            "training run")
    keys = ("label", "kind", "caption_source", "synthetic", "ratio", "dsc_share", "seed", "step", "final", "train_run")
    body = "".join("<tr><td>" + escape(r) + "</td>" + "".join(
        f"<td>{escape('' if i[k] is None else str(i[k]))}</td>" for k in keys) + "</tr>"
                   for r, i in rep["runs"].items())
    return f'<h2 id="runs">Runs</h2><table class="runs">{_head(cols)}{body}</table>'


def tables_section(rep: dict) -> str:
    out = ['<h2 id="scores">Scores per prompt kind</h2><p class="caption">Each cell: mean [95% bootstrap '
           "interval over prompts], n = prompts that state the category (checks) or all prompts (CLIP). "
           "Checks are % of prompts passing. Ceiling: the val images themselves (resize + VAE round trip); "
           "chance: each prompt scored against another prompt's image.</p>"]
    metrics = rep["metrics"]
    for kind in rep["kinds"]:
        rows = rep["tables"][kind]
        body = "".join(
            f'<tr class="{"ref" if rep["runs"][t["run"]]["kind"] != "model" else "model"}" data-run="{escape(t["run"])}">'
            f'<td>{escape(rep["runs"][t["run"]]["label"])}</td>' + "".join(ci_cell(t["cells"][m], m) for m in metrics)
            + "</tr>" for t in rows)
        heads = ["run"] + [f'<abbr title="{escape(CHECK_HELP.get(m, m))}">{m}</abbr>' for m in metrics]
        out.append(f'<h3 id="scores-{kind}">{kind} prompts</h3><table class="scores" data-kind="{kind}">'
                   "<tr>" + "".join(f"<th>{h}</th>" for h in heads) + f"</tr>{body}</table>")
    return "".join(out)


def comparisons_section(rep: dict) -> str:
    out = ['<h2 id="comparisons">Paired comparisons</h2><p class="caption">a − b over the same prompts and the same '
           "noise seeds; the bootstrap resamples prompts jointly. CLIP in score points, checks in percentage "
           "points; bold where the 95% interval excludes 0.</p>"]
    metrics = rep["metrics"]
    for kind in rep["kinds"]:
        comps = rep["comparisons"][kind]
        if not comps:
            out.append(f"<p>No comparisons for {kind} prompts.</p>")
            continue
        body = "".join(f'<tr data-a="{escape(c["a"])}" data-b="{escape(c["b"])}"><td>{escape(c["label_a"])} − '
                       f'{escape(c["label_b"])}</td>' + "".join(diff_cell(c["metrics"][m], m) for m in metrics)
                       + "</tr>" for c in comps)
        out.append(f'<h3 id="comparisons-{kind}">{kind} prompts</h3><div class="wide"><table class="comparisons" '
                   f'data-kind="{kind}">{_head(["a − b", *metrics])}{body}</table></div>')
    return "".join(out)


def upsampling_section(rep: dict) -> str:
    """Short prompts with and without prompt upsampling, per run: with − without, paired (``dalle3-eval upsample=true``)."""
    comp = rep.get("upsampling") or {}
    if not comp:
        return ""
    metrics = rep["metrics"]
    out = ['<h2 id="upsampling">Prompt upsampling</h2><p class="caption">Each short prompt is rewritten by the '
           "upsampler into a descriptive caption and the same run generates from it with the same noise seed. Both "
           "images are scored against the <em>original</em> short prompt: judge CLIP against its text, exact checks "
           "of the facts it states. Cells: with − without upsampling over the same prompts, 95% paired bootstrap "
           "interval; bold where it excludes 0. Fallback: share of prompts the guards sent on as they were.</p>"]
    for kind, rows in comp.items():
        body = "".join(
            f'<tr data-run="{escape(r["run"])}"><td>{escape(r["label"])}</td><td class="num">{100 * r["fallback_rate"]:.1f}%</td>'
            + "".join(ci_cell(r[side][m], m) for m in ("clip", "exact") for side in ("without", "with"))
            + "".join(diff_cell(r["metrics"][m], m) for m in metrics) + "</tr>" for r in rows)
        heads = ["run", "fallback", "clip without", "clip with", "exact without", "exact with",
                 *[f"Δ {m}" for m in metrics]]
        out.append(f'<h3 id="upsampling-{kind}">{kind} prompts</h3><div class="wide"><table class="upsampling" '
                   f'data-kind="{kind}">{_head(heads)}{body}</table></div>')
    return "".join(out)


def figures_section(rep: dict) -> str:
    out = ['<h2 id="figures">Figures</h2>']
    for f in rep["figures"]:
        out.append(f'<figure><h3>{escape(f["title"])}</h3>{_img(f["file"], f["title"], "style=max-width:100%")}'
                   f'<figcaption>{escape(f["caption"])}</figcaption></figure>')
    if not rep["figures"]:
        out.append("<p>Nothing to plot.</p>")
    return "".join(out)


def grids_section(rep: dict) -> str:
    out = ['<h2 id="grids">Samples</h2><p class="caption">The same prompts with the same noise seed across runs '
           "(columns); the prompt is under each row, with the judge CLIP score and the exact check under each "
           "image. Ceiling is the val image itself.</p>"]
    for kind in rep["kinds"]:
        g = rep["grids"][kind]
        if not g["rows"]:
            out.append(f"<p>No images for {kind} prompts.</p>")
            continue
        labels = [rep["runs"][r]["label"] for r in g["runs"]]
        rows = []
        for row in g["rows"]:
            cells = []
            for r in g["runs"]:
                c = row["cells"].get(r)
                if c is None or c["image"] is None:
                    cells.append("<td>(no image)</td>")
                    continue
                mark = {True: "✓", False: "✗", None: ""}[c["exact"]]
                clip = "" if c["clip"] is None else f'{c["clip"]:.1f}'
                cells.append(f'<td>{_img(c["image"], row["prompt"])}<br><span class="n">{clip} {mark}</span></td>')
            rows.append("<tr>" + "".join(cells) + "</tr>")
            rows.append(f'<tr><td class="prompt" colspan="{len(g["runs"])}">{escape(row["prompt"])} '
                        f'<span class="n">({escape(str(row["key"]))}, seed {escape(str(row["seed"]))})</span></td></tr>')
        out.append(f'<h3 id="grids-{kind}">{kind} prompts</h3><table class="grid" data-kind="{kind}">'
                   f'{_head(labels)}{"".join(rows)}</table>')
    return "".join(out)


def _flatten(d, prefix="") -> list[tuple[str, object]]:
    items = []
    for k, v in d.items():
        if isinstance(v, dict):
            items += _flatten(v, f"{prefix}{k}.")
        else:
            items.append((f"{prefix}{k}", v))
    return items


def _value(v) -> str:
    return f"{v:.3f}" if isinstance(v, float) else escape(str(v))


def validation_section(rep: dict) -> str:
    out = []
    if rep.get("judge") is not None:
        body = "".join(f"<tr><td>{escape(k)}</td><td class=num>{_value(v)}</td></tr>" for k, v in _flatten(rep["judge"]))
        out.append('<h2 id="judge">The judge CLIP</h2><p class="caption">Validation of the CLIP that scores the images: '
                   "retrieval accuracy on val images and how often it prefers the true caption over one with a "
                   f'single fact changed (sensitivity per category).</p><table class="judge">{_head(["", "value"])}'
                   f"{body}</table>")
    caps = rep.get("captioners")
    if caps is not None:
        cats = sorted({c for per in caps.values() if isinstance(per, dict) for c in per})
        cols = [f"{name} {stat}" for name in caps for stat in ("recall", "false_rate")]
        body = ""
        for cat in cats:
            vals = [(caps[name].get(cat) or {}).get(stat) if isinstance(caps[name].get(cat), dict) else None
                    for name in caps for stat in ("recall", "false_rate")]
            body += f"<tr><td>{escape(cat)}</td>" + "".join(
                f"<td class=num>{'n/a' if v is None else _value(v)}</td>" for v in vals) + "</tr>"
        out.append('<h2 id="captioners">The captioners</h2><p class="caption">Fact recall per category of each '
                   "captioner on its own recaptions (share of true facts stated) and the false rate (share of "
                   f'stated facts that are wrong).</p><table class="captioners">{_head(["category", *cols])}'
                   f"{body}</table>")
    return "".join(out)


def findings_section(rep: dict) -> str:
    """The three findings, one line each, with their margins, 95 % intervals and whether they hold."""
    items = rep.get("findings") or []
    if not items:
        return ""
    word = {True: "holds", False: "does not hold", None: "not measured"}
    rows = "".join(f"<tr><td>{escape(f['name'])}</td><td class=num>{'n/a' if f.get('margin') is None else _value(f['margin'])}</td>"
                   f"<td class=num>{escape(_interval(f.get('interval')))}</td><td>{word[f.get('holds')]}</td></tr>"
                   for f in items)
    lines = "".join(f"<li><code>{escape(f['line'])}</code></li>" for f in items)
    return (f'<h2 id="findings">The three findings</h2><p class="caption">Paired differences in judge CLIP '
            f"score (the first also in exact checks), 95 % bootstrap intervals over prompts; a finding holds when "
            f"its interval excludes 0 in the stated direction (<code>dalle3/eval/findings.py</code>).</p>"
            f'<table class="findings">{_head(["finding", "margin", "95 % interval", ""])}{rows}</table><ul>{lines}</ul>')


def _interval(iv) -> str:
    if not iv or iv[0] is None:
        return "n/a"
    return f"[{iv[0]:+.2f}, {iv[1]:+.2f}]"


def render_html(rep: dict, links: dict[str, bool]) -> str:
    """The whole page. ``links`` says which eval files exist beside ``report/`` (linked as ``../name``)."""
    src = rep["source"]
    files = ", ".join(f'<a href="../{n}">{n}</a>' for n, ok in links.items() if ok)
    nav = " · ".join(f'<a href="#{a}">{t}</a>' for a, t in (
        ("findings", "findings"), ("runs", "runs"), ("scores", "scores"), ("comparisons", "comparisons"), ("figures", "figures"),
        ("grids", "samples")) + ((("upsampling", "upsampling"),) if rep.get("upsampling") else ())
        + ((("judge", "judge"),) if rep.get("judge") is not None else ())
        + ((("captioners", "captioners"),) if rep.get("captioners") is not None else ()))
    per_kind = ", ".join(f"{n} {k}" for k, n in src["records_per_kind"].items())
    return (f"<!DOCTYPE html><html lang=en><head><meta charset=utf-8><title>dalle3 evaluation report</title>"
            f"<style>{_CSS}</style></head><body><h1>Better captions: evaluation report</h1>"
            f"<p>From <code>{escape(src['dir'])}</code>: {src['records']} per-prompt records ({per_kind}) of "
            f"{src['runs']} runs. Files: {files}, <a href=\"report.json\">report.json</a> (every number below). "
            f"Intervals: {src['level']:.0%} percentile bootstrap over prompts, {src['n_boot']} resamples.</p>"
            f"<p>{nav}</p>{findings_section(rep)}{runs_section(rep)}{tables_section(rep)}{comparisons_section(rep)}"
            f"{upsampling_section(rep)}{figures_section(rep)}"
            f"{grids_section(rep)}{validation_section(rep)}"
            f'<p id="render-status" class="n">(render status is written here by the page after load)</p>'
            f"{_STATUS_JS}</body></html>")
