"""A stand-in training stage with the same command line as ``dalle3-train``.

A Hydra main over the real root config (so ``-m``, ``hydra/launcher=...`` and every
override behave as they do for ``dalle3-train``) that trains the toy regression of
``tests/helpers/toy_train.py`` through :func:`dalle3.trainer.fit` and prints the same
one-line JSON summary as the real stages (``steps``, ``steps_run``, ``resumed_from``,
``rank``, ``world_size``, ``strategy``) plus what the launch tests check (node, SLURM
restart count, Lightning's cluster environment, the blend ratio it was given).

``TOY_STEP_SECONDS`` slows every step so a test can signal the job mid-training;
rank 0 prints ``toy step N`` after each step so the test knows where it is.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import hydra
import lightning as L
from omegaconf import DictConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `helpers`

from dalle3.config import CONF_DIR, register_configs  # noqa: E402
from dalle3.trainer import fit  # noqa: E402
from helpers.toy_train import ToyData, ToyModule  # noqa: E402

register_configs()


class Pace(L.Callback):
    """Slow steps down and report progress (rank 0) so tests can time their signals."""

    def __init__(self) -> None:
        self.start_step = 0
        self.delay = float(os.environ.get("TOY_STEP_SECONDS", "0"))

    def on_train_start(self, trainer, pl_module) -> None:
        self.start_step = trainer.global_step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.is_global_zero:
            print(f"toy step {trainer.global_step}", flush=True)
        if self.delay:
            time.sleep(self.delay)


@hydra.main(config_path=CONF_DIR, config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    t0 = time.time()
    pace = Pace()
    module = ToyModule()
    trainer = fit(module, ToyData(), cfg, callbacks=[pace], enable_model_summary=False, limit_val_batches=0)
    env = trainer._accelerator_connector.cluster_environment
    summary = {
        "stage": "toy", "run_dir": str(cfg.paths.run_dir), "steps": trainer.global_step,
        "steps_run": module.calls, "start_step": pace.start_step,
        "resumed_from": trainer.ckpt_path, "rank": trainer.global_rank, "world_size": trainer.world_size,
        "strategy": type(trainer.strategy).__name__, "cluster_env": type(env).__name__,
        "auto_requeue": bool(getattr(env, "auto_requeue", False)),
        "node": os.environ.get("SLURMD_NODENAME"), "restart": int(os.environ.get("SLURM_RESTART_COUNT", 0)),
        "ratio": cfg.caption.ratio, "seconds": round(time.time() - t0, 1),
    }
    print(json.dumps(summary), flush=True)
    out = Path(cfg.paths.run_dir) / f"summary_rank{trainer.global_rank}_restart{summary['restart']}.json"
    out.write_text(json.dumps(summary))


if __name__ == "__main__":
    main()
