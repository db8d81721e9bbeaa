"""The wheel ships conf/, and configs compose from an installed wheel (not the checkout)."""
from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_wheel_contains_conf_and_composes_outside_the_checkout(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(tmp_path / "whl"), str(ROOT)], check=True, capture_output=True)
    wheel = next((tmp_path / "whl").glob("dalle3-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "dalle3/conf/config.yaml" in names and "dalle3/conf/caption/blend.yaml" in names
    target = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(target)
    code = ("import dalle3, sys; from dalle3.config import compose, CONF_DIR;"
            "assert CONF_DIR.startswith(sys.argv[1]), CONF_DIR;"
            "print(compose(['caption=dsc']).caption.source)")
    env = {**os.environ, "PYTHONPATH": str(target)}
    out = subprocess.run([sys.executable, "-c", code, str(target)], cwd=tmp_path, env=env,
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "dsc"
