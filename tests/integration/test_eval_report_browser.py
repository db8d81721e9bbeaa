"""The report in a real browser: headless Chromium loads every image and renders every table.

The page writes, after its load event, how many images loaded and tables rendered into
``#render-status``; ``chromium --dump-dom`` prints the DOM after load, so the test reads it
there. Chromium is Debian's package; when it is missing the set-up installs it if it can
(root, apt-get, ``DALLE3_INSTALL_CHROMIUM`` not ``0``), else the test is skipped with why.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from helpers.eval_records import write_eval_dir

from dalle3.eval.report import write_report

BINARIES = ("chromium", "chromium-headless-shell", "chromium-browser")


def _find() -> str | None:
    for name in BINARIES:
        path = shutil.which(name) or (f"/usr/bin/{name}" if os.access(f"/usr/bin/{name}", os.X_OK) else None)
        if path:
            return path
    return None


def _install() -> str:
    """Try ``apt-get install chromium``; return why it was not possible or did not work ('' on success)."""
    if os.environ.get("DALLE3_INSTALL_CHROMIUM") == "0":
        return "DALLE3_INSTALL_CHROMIUM=0"
    if not hasattr(os, "geteuid") or os.geteuid() != 0 or shutil.which("apt-get") is None:
        return "installing needs root and apt-get"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        for cmd in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "chromium"]):
            done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
            if done.returncode:
                return f"{' '.join(cmd)} failed: {done.stderr.strip()[-300:]}"
    except subprocess.TimeoutExpired as e:
        return f"{' '.join(e.cmd)} took over 600 s"
    return ""


@pytest.fixture(scope="session")
def chromium() -> str:
    path = _find()
    if path is None:
        why = _install()
        path = _find()
        if path is None:
            pytest.skip(f"no headless Chromium ({', '.join(BINARIES)} not on PATH or in /usr/bin); "
                        f"could not install it: {why or 'apt-get install chromium left no binary'}")
    return path


def _browse(chromium: str, page: Path, profile: Path, *args: str) -> str:
    cmd = [chromium, "--headless", "--disable-gpu", "--no-first-run", f"--user-data-dir={profile}", *args,
           page.as_uri()]
    if os.geteuid() == 0:
        cmd.insert(2, "--no-sandbox")  # Chromium refuses to run as root inside its sandbox
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def _status(dom: str) -> dict[str, int]:
    tag = re.search(r'<p id="render-status"[^>]*>', dom)
    assert tag, "the page's load script did not run"
    return {k: int(v) for k, v in re.findall(r'data-([a-z-]+)="(\d+)"', tag.group(0))}


def test_report_renders_in_headless_chromium(chromium, tmp_path):
    out = write_eval_dir(tmp_path / "eval")
    index = write_report(out, n_boot=200)
    html = index.read_text()
    n_img, n_tables = html.count("<img "), html.count("<table")

    dom = _browse(chromium, index, tmp_path / "profile", "--dump-dom")
    status = _status(dom)
    assert status == {"images": n_img, "images-ok": n_img, "tables": n_tables, "tables-ok": n_tables}
    assert 'class="broken"' not in dom and n_img > 70 and n_tables == 13  # 12 + the findings table

    shot = tmp_path / "report.png"
    _browse(chromium, index, tmp_path / "profile", f"--screenshot={shot}", "--window-size=1300,3000")
    assert shot.is_file() and shot.stat().st_size > 10_000
    from PIL import Image

    with Image.open(shot) as im:
        assert im.size == (1300, 3000) and len(im.convert("L").getcolors(1 << 16) or ()) > 10  # not blank

    # The check can fail: a sample that disappears after the report was written shows up as broken.
    (out / "images/alt_dsc0.95/dsc_val_00000.png").unlink()
    dom = _browse(chromium, index, tmp_path / "profile", "--dump-dom")
    assert _status(dom)["images-ok"] == n_img - 1 and dom.count('class="broken"') == 1
