"""Console scripts: bad input fails with one line and exit code 2; old names still work, with a warning."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent


def _run(cmd, *args, cwd):
    return subprocess.run([str(BIN / cmd), *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_train_without_stage_names_the_allowed_stages(tmp_path):
    out = _run("dalle3-train", cwd=tmp_path)
    assert out.returncode == 2
    line = out.stderr.strip().splitlines()[-1]
    assert "stage='world'" in line and "captioner_pretrain" in line and "ldm" in line


def test_bad_world_value_fails_before_any_work(tmp_path):
    out = _run("dalle3-world", "world.image_size=48", f"paths.data_dir={tmp_path}/w", cwd=tmp_path)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1] == \
        "dalle3-world: world.image_size=48 is not allowed; choose one of: 32 | 64"
    assert not (tmp_path / "w").exists()


def test_old_command_and_stage_names_still_run_with_a_deprecation_line(tmp_path):
    out = _run("dalle3-data", "experiment=smoke", "datagen.sizes.train=4", "datagen.sizes.val=4",
               "datagen.sizes.annotated=4", "datagen.sizes.judge=4", "datagen.workers=1", f"paths.data_dir={tmp_path}/w",
               cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "dalle3-data is deprecated; use dalle3-world" in out.stderr
    assert sorted(p.name for p in (tmp_path / "w").iterdir() if p.is_dir()) == ["annotated", "dev", "judge", "train", "val"]
    old = _run("dalle3-world", "stage=data", "world.image_size=48", cwd=tmp_path)
    assert "stage=data is deprecated; use stage=world" in old.stderr
    assert old.stderr.strip().splitlines()[-1].endswith("world.image_size=48 is not allowed; choose one of: 32 | 64")


def test_unknown_caption_group_lists_the_options(tmp_path):
    out = _run("dalle3-world", "caption=web", cwd=tmp_path)
    assert out.returncode != 0
    assert "caption" in out.stderr and "blend" in out.stderr
