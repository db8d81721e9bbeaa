"""Fixtures for the tests that submit ``launch/`` scripts to SLURM (see slurm_harness.py)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from slurm_harness import Cluster, skip_reason


@pytest.fixture(scope="session")
def slurm():
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    cluster = Cluster()
    yield cluster
    cluster.cleanup()


@pytest.fixture(scope="session")
def slurm_workdir(tmp_path_factory) -> Path:
    base = os.environ.get("DALLE3_SLURM_WORKDIR")
    if base:
        path = Path(base) / f"dalle3-slurm-tests-{os.getpid()}"
        path.mkdir(parents=True, exist_ok=True)
        return path
    return tmp_path_factory.mktemp("slurm")


@pytest.fixture(scope="session")
def world(slurm, slurm_workdir) -> Path:
    """A tiny synthetic world (5 training shards of 64 samples) on storage the jobs see."""
    data_dir = slurm_workdir / "world"
    proc = subprocess.run([str(Path(sys.executable).parent / "dalle3-world"), "experiment=smoke",
                           f"paths.data_dir={data_dir}", "datagen.sizes.train=320", "datagen.workers=1"],
                          capture_output=True, text=True, timeout=180, cwd=slurm_workdir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return data_dir
