"""Helpers for tests that submit the project's real ``launch/`` scripts to SLURM.

They run against the private test cluster of ``scripts/slurm_cluster.sh`` (``.ci/run``
starts it), found through ``$DALLE3_SLURM_DIR`` (default ``/tmp/dalle3-slurm``). Without
it they skip with the reason. To run them on a real cluster instead, set
``DALLE3_SLURM_TESTS=1`` (optionally ``DALLE3_SLURM_PARTITION``) and point
``DALLE3_SLURM_WORKDIR`` at storage every node sees; they submit small CPU jobs.

Which program stands for a stage is decided here, once, so switching a test from a
stand-in to the real stage is one line (``TRAIN_STAGE`` / ``stage_command``).
"""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import pytest

ROOT = Path(__file__).resolve().parents[2]
LAUNCH = ROOT / "launch"
HERE = Path(__file__).resolve().parent
CLUSTER_DIR = Path(os.environ.get("DALLE3_SLURM_DIR", "/tmp/dalle3-slurm"))
FINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE",
         "PREEMPTED"}

# The training stage the launch tests run. Its real implementation is used when it exists;
# the toy (tests/slurm/toy_stage.py, same command line as dalle3-train) otherwise.
TRAIN_STAGE = "captioner_pretrain"


def stage_command(stage: str, real: bool = True) -> tuple[str, list[str]]:
    """(DALLE3_CMD, extra overrides) that run ``stage`` in a launch test.

    Args:
        stage: ``train`` or ``recaption``.
        real: use the real stage; ``False`` gives the toy (tests that need its step pacing,
            or that test launcher mechanics only).
    """
    py = shlex.quote(sys.executable)
    if stage == "train":
        if real:
            return "dalle3-train", [f"stage={TRAIN_STAGE}", "experiment=smoke"]
        return f"{py} {HERE / 'toy_stage.py'}", []
    if stage == "recaption":  # the shared per-shard runner with a copy job: launcher mechanics, no captioners
        return f"{py} {HERE / 'offline_standin.py'}", []
    raise KeyError(stage)


def _run(cmd: list[str], timeout: float = 30, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    return proc


def skip_reason() -> Optional[str]:
    """Why the slurm tests cannot run here (None: a cluster answers); points SLURM_CONF at the test cluster."""
    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        return "no SLURM client (sinfo/sbatch not found); start a test cluster with scripts/slurm_cluster.sh start"
    conf = CLUSTER_DIR / "etc" / "slurm.conf"
    if conf.exists():
        os.environ["SLURM_CONF"] = str(conf)
    elif os.environ.get("DALLE3_SLURM_TESTS") != "1":
        return (f"no test cluster at {CLUSTER_DIR} (scripts/slurm_cluster.sh start); "
                "set DALLE3_SLURM_TESTS=1 to submit to the cluster sinfo reaches")
    try:
        proc = _run(["sinfo", "-h", "-N", "-o", "%N %t"], timeout=15, check=False)
    except subprocess.TimeoutExpired:
        return "sinfo did not answer within 15 s"
    if proc.returncode != 0:
        return f"sinfo failed: {proc.stderr.strip()[-300:]}"
    up = [line for line in proc.stdout.splitlines() if re.search(r" (idle|mix|alloc|comp)\S*$", line)]
    if len(up) < 2:
        return f"the cluster needs 2 responding nodes, sinfo shows: {proc.stdout.strip()!r}"
    return None


@dataclass
class Job:
    """One submitted job (or one array task: ``id`` = ``<job>_<task>``)."""

    id: str
    log: Path
    cluster: "Cluster" = field(repr=False)

    def info(self) -> dict:
        """``scontrol show job`` as a dict (works without accounting); {} once forgotten."""
        proc = _run(["scontrol", "show", "job", "-o", self.id], check=False)
        if proc.returncode != 0 or not proc.stdout.strip():
            return {}
        return dict(re.findall(r"(\w+)=(\S*)", proc.stdout.splitlines()[0]))

    def state(self) -> str:
        info = self.info()
        if info:
            return info["JobState"]
        proc = _run(["sacct", "-n", "-X", "-P", "-o", "State", "-j", self.id], check=False)
        return (proc.stdout.split() or ["UNKNOWN"])[0]

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else f"(no log at {self.log})"

    def report(self) -> str:
        """What a failing test shows: the job's state and the end of its log."""
        return (f"\n--- job {self.id}: {self.info() or self.state()}\n--- log {self.log} (last 6000 chars):\n"
                f"{self.text()[-6000:]}")

    def wait(self, timeout: float, until: set[str] = FINAL, restarts: int = 0) -> str:
        """Poll until the job is in ``until`` (with at least ``restarts`` requeues); fail with its log."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            info = self.info()
            state = info.get("JobState") if info else self.state()
            if state in until and int(info.get("Restarts", 0) if info else 0) >= restarts:
                return state
            time.sleep(1)
        self.cancel()
        pytest.fail(f"job {self.id} not {sorted(until)} after {timeout:.0f} s" + self.report())

    def wait_for_log(self, pattern: str, timeout: float) -> re.Match:
        deadline = time.time() + timeout
        while time.time() < deadline:
            match = re.search(pattern, self.text())
            if match:
                return match
            if self.state() in FINAL:
                break
            time.sleep(0.5)
        self.cancel()
        pytest.fail(f"job {self.id}: {pattern!r} never appeared in its log" + self.report())

    def cancel(self) -> None:
        _run(["scancel", self.id], check=False)

    def summaries(self) -> list[dict]:
        """The stage's JSON summary lines (one per rank and run; ``srun --label`` prefixes stripped)."""
        out = []
        for line in self.text().splitlines():
            m = re.match(r"^\s*(\d+: )?(\{\"stage\".*\})\s*$", line)
            if m:
                out.append(json.loads(m.group(2)))
        return out


class Cluster:
    def __init__(self) -> None:
        self.jobs: list[Job] = []

    def env(self, **extra: str) -> dict:
        env = dict(os.environ)
        env.update({
            "PATH": f"{Path(sys.executable).parent}:{env.get('PATH', '')}",  # dalle3-train, torchrun of this venv
            "SBATCH_GPUS_PER_NODE": "0",  # CPU nodes: overrides the scripts' --gpus-per-node
            "OMP_NUM_THREADS": "1",
            "HF_HUB_OFFLINE": "1",
            "PYTHONUNBUFFERED": "1",
            # `helpers` for the stand-ins (submitit unpickles their functions in the job)
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "tests"), env.get("PYTHONPATH")])),
        })
        env.update(extra)
        return env

    def sbatch(self, script: str, overrides: list[str], workdir: Path, *, options: list[str] = (),
               env: Optional[dict] = None) -> Job:
        """Submit ``launch/<script>`` with sbatch options and Hydra overrides; return the job."""
        workdir.mkdir(parents=True, exist_ok=True)
        name = f"t-{script.split('.')[0]}"
        array = any(o.startswith("--array") for o in options)
        log = workdir / (f"{name}-%A_%a.out" if array else f"{name}-%j.out")
        opts = ["--parsable", f"--job-name={name}", f"--chdir={workdir}", f"--output={log}", "--time=15",
                "--cpus-per-task=1", *options]
        if os.environ.get("DALLE3_SLURM_PARTITION"):
            opts.append(f"--partition={os.environ['DALLE3_SLURM_PARTITION']}")
        proc = subprocess.run(["sbatch", *opts, str(LAUNCH / script), *overrides], capture_output=True, text=True,
                              timeout=60, env=env or self.env())
        assert proc.returncode == 0, f"sbatch failed: {proc.stderr}"
        job_id = proc.stdout.strip().split(";")[0]
        job = Job(job_id, Path(str(log).replace("%j", job_id)), self)
        self.jobs.append(job)
        return job

    def array_task(self, job: Job, task: int) -> Job:
        return Job(f"{job.id}_{task}", Path(str(job.log).replace("%A", job.id).replace("%a", str(task))), self)

    def cleanup(self) -> None:
        for job in self.jobs:
            job.cancel()
