"""The static HTML report: links resolve, tables hold the expected rows, report.json holds the diffs."""
from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import pytest
from helpers.eval_records import KINDS, write_eval_dir

from dalle3.eval.report import default_comparisons, load_runs, main, write_report
from dalle3.eval.stats import by_run, load_records, paired_diff

FINAL_LABELS = ["alt-only", "95% dsc", "100% dsc"]


class Page(HTMLParser):
    """Every img src, a href, element id and table (class, kind, rows of cell texts) of a page."""

    def __init__(self):
        super().__init__()
        self.srcs, self.hrefs, self.ids, self.tables = [], [], set(), []
        self._cell = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self.ids.add(a["id"])
        if tag == "img":
            self.srcs.append(a["src"])
        elif tag == "a" and "href" in a:
            self.hrefs.append(a["href"])
        elif tag == "table":
            self.tables.append({"class": a.get("class"), "kind": a.get("data-kind"), "rows": []})
        elif tag == "tr":
            self.tables[-1]["rows"].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1]["rows"][-1].append("".join(self._cell).strip())
            self._cell = None

    def of(self, cls):
        return {t["kind"]: t for t in self.tables if t["class"] == cls}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = write_eval_dir(tmp_path_factory.mktemp("eval"))
    index = write_report(out, n_boot=500)
    page = Page()
    page.feed(index.read_text())
    return out, index, page, json.loads((index.parent / "report.json").read_text())


def test_report_files_are_written(built):
    out, index, _, rep = built
    assert index == out.resolve() / "report" / "index.html"
    names = {f["file"] for f in rep["figures"]}
    assert names == {"fig4_clip_vs_step.png", "fig5_clip_vs_dsc_share.png",
                     *(f"categories_{k}.png" for k in KINDS)}
    for n in names:
        assert (index.parent / n).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_every_image_and_link_resolves(built):
    _, index, page, _ = built
    assert len(page.srcs) > 3 * 4 * 6  # three grids of 4 runs x 6 prompts, plus the figures
    for ref in page.srcs + page.hrefs:
        if ref.startswith("#"):
            assert ref[1:] in page.ids, ref
        else:
            assert "://" not in ref and not ref.startswith("/"), ref  # relative: the folder can move
            assert (index.parent / unquote(ref)).is_file(), ref


def test_score_tables_have_a_row_per_final_run_and_reference(built):
    _, _, page, rep = built
    tables = page.of("scores")
    assert sorted(tables) == sorted(KINDS)
    for kind, t in tables.items():
        assert t["rows"][0] == ["run", *rep["metrics"]]
        assert [r[0] for r in t["rows"][1:]] == FINAL_LABELS + ["ceiling", "chance"]
        assert all(len(r) == 1 + len(rep["metrics"]) for r in t["rows"])
    alt = tables["alt"]["rows"]
    size = alt[0].index("size")
    assert all(r[size] == "n/a" for r in alt[1:])  # alt prompts state no sizes
    dsc_row = tables["dsc"]["rows"][3]
    cell = rep["tables"]["dsc"][2]["cells"]["clip"]
    assert dsc_row[1].startswith(f"{cell['mean']:.2f}[{cell['lo']:.2f}, {cell['hi']:.2f}]")


def test_comparisons_are_paired_diffs_of_the_records(built):
    out, _, page, rep = built
    assert [(c["a"], c["b"]) for c in rep["comparisons"]["dsc"]] == [
        ("blend_dsc0.95", "alt_dsc0.95"), ("dsc_dsc0.95", "alt_dsc0.95"), ("dsc_dsc0.95", "blend_dsc0.95")]
    clip = by_run(load_records(out), "dsc", "clip")
    for c in rep["comparisons"]["dsc"]:
        assert c["metrics"]["clip"] == pytest.approx(paired_diff(clip[c["a"]], clip[c["b"]], n_boot=500))
    dsc_vs_alt = rep["comparisons"]["dsc"][1]["metrics"]["clip"]
    assert dsc_vs_alt["lo"] > 1.0 and dsc_vs_alt["n"] == 10  # the built-in +3 points on DSC prompts
    table = page.of("comparisons")["dsc"]
    assert [r[0] for r in table["rows"][1:]] == ["95% dsc − alt-only", "100% dsc − alt-only", "100% dsc − 95% dsc"]


def test_step_curves_and_share_points(built):
    _, _, _, rep = built
    lines = rep["steps"]["dsc"]
    assert sorted(lines) == ["alt_dsc0.95", "blend_dsc0.95", "dsc_dsc0.95"]
    assert [p["step"] for p in lines["dsc_dsc0.95"]["points"]] == [10, 20, 30]
    assert lines["dsc_dsc0.95"]["label"] == "100% dsc"
    means = [p["clip"]["mean"] for p in lines["dsc_dsc0.95"]["points"]]
    assert means[0] < means[-1]  # it learns the DSC prompts
    assert [p["dsc_share"] for p in rep["share"]["dsc"]] == [0.0, 0.95, 1.0]


def test_grids_show_the_same_prompts_across_runs(built):
    _, _, page, rep = built
    grid = page.of("grid")["dsc"]
    assert grid["rows"][0] == FINAL_LABELS + ["ceiling"]
    assert grid["rows"][2][0].startswith("a dsc prompt number 0 (val_00000, seed 1000)")
    assert len(rep["grids"]["dsc"]["rows"]) == 6


def test_judge_and_captioners_are_rendered(built):
    _, _, page, _ = built
    judge = page.of("judge")[None]["rows"]
    assert ["retrieval", "0.910"] in judge and ["sensitivity.count", "0.600"] in judge
    caps = page.of("captioners")[None]["rows"]
    assert caps[0] == ["category", "ssc recall", "ssc false_rate", "dsc recall", "dsc false_rate"]
    assert ["shape", "0.400", "0.050", "0.900", "0.050"] in caps


def test_missing_images_and_files_are_not_linked(tmp_path):
    out = write_eval_dir(tmp_path / "eval", n_prompts=4)
    (out / "images/dsc_dsc0.95/dsc_val_00000.png").unlink()
    (out / "judge.json").unlink()
    (out / "captioners.json").unlink()
    index = write_report(out, n_boot=100)
    page = Page()
    page.feed(index.read_text())
    for ref in page.srcs + page.hrefs:
        assert ref.startswith("#") or (index.parent / unquote(ref)).is_file(), ref
    assert "judge" not in page.ids and "captioners" not in page.ids
    grid = page.of("grid")["dsc"]["rows"]
    assert grid[1][FINAL_LABELS.index("100% dsc")] == "(no image)"


def test_comparisons_can_be_chosen_and_unknown_runs_are_named(tmp_path):
    out = write_eval_dir(tmp_path / "eval", n_prompts=4)
    index = write_report(out, comparisons=[("dsc_dsc0.95@10", "dsc_dsc0.95")], n_boot=100)
    rep = json.loads((index.parent / "report.json").read_text())
    assert [(c["a"], c["b"]) for c in rep["comparisons"]["dsc"]] == [("dsc_dsc0.95@10", "dsc_dsc0.95")]
    assert rep["comparisons"]["dsc"][0]["metrics"]["clip"]["diff"] < 0  # an early checkpoint is behind
    with pytest.raises(ValueError, match="no run 'nope'"):
        write_report(out, comparisons=[("nope", "alt_dsc0.95")])


def test_rebuilds_from_records_alone_via_the_command(tmp_path, capsys):
    out = write_eval_dir(tmp_path / "eval", n_prompts=4)
    (out / "runs.json").unlink()  # every run becomes a final model run, ceiling and chance by name
    runs = load_runs(out, load_records(out))
    assert runs["ceiling"]["kind"] == "ceiling" and runs["alt_dsc0.95@10"]["final"]
    assert default_comparisons(runs) == []  # no caption sources known: nothing to compare by default
    main([str(out), "--n-boot", "50", "--compare", "dsc_dsc0.95:alt_dsc0.95"])
    index = Path(capsys.readouterr().out.strip())
    assert index.is_file()
    rep = json.loads((index.parent / "report.json").read_text())
    assert rep["comparisons"]["dsc"][0]["metrics"]["clip"]["diff"] > 1.0
