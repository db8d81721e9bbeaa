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


def test_cpu_ranks_share_the_cores_instead_of_oversubscribing_them():
    from dalle3.dist.strategy import cpu_threads

    t = compose(["trainer=ddp", "trainer.accelerator=cpu"]).trainer  # 2 processes
    assert cpu_threads(t, environ={}, cores=2) == 1
    assert cpu_threads(t, environ={}, cores=16) == 8
    assert cpu_threads(t, environ={"OMP_NUM_THREADS": "1"}, cores=16) is None  # torchrun / SLURM set it: left alone
    assert cpu_threads(compose(["trainer.accelerator=cpu"]).trainer, environ={}, cores=2) is None  # one process
    assert cpu_threads(compose(["trainer.accelerator=cpu", "trainer.cpu_threads=3"]).trainer, environ={}) == 3
