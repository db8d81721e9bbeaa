"""resume=auto picks the newest checkpoint: periodic last.ckpt or the SLURM signal's hpc_ckpt."""
from __future__ import annotations

import os

import pytest

from dalle3.config import ConfigError, compose
from dalle3.trainer import resolve_resume


def test_auto_resume_takes_the_newest_checkpoint(tmp_path):
    cfg = compose([f"paths.run_dir={tmp_path}"])
    assert resolve_resume(cfg) is None  # fresh run
    (tmp_path / "checkpoints").mkdir()
    last = tmp_path / "checkpoints" / "last.ckpt"
    last.write_bytes(b"")
    assert resolve_resume(cfg) == str(last)
    hpc = tmp_path / "hpc_ckpt_1.ckpt"  # written by Lightning on SIGUSR1 before requeue
    hpc.write_bytes(b"")
    os.utime(last, (1, 1))
    assert resolve_resume(cfg) == str(hpc)


def test_explicit_resume_must_exist(tmp_path):
    assert resolve_resume(compose([f"paths.run_dir={tmp_path}", "trainer.resume=null"])) is None
    with pytest.raises(ConfigError, match="trainer.resume"):
        resolve_resume(compose([f"paths.run_dir={tmp_path}", f"trainer.resume={tmp_path}/nope.ckpt"]))
