"""Building the Lightning strategy from ``cfg.trainer``: the one place that knows DeepSpeed.

Lightning's ``DeepSpeedStrategy`` refuses any accelerator but CUDA, yet DeepSpeed itself
runs ZeRO 1-3 on the CPU with gloo (it picks its CPU accelerator when there is no GPU).
:class:`CPUDeepSpeedStrategy` lifts exactly that refusal so the ZeRO code paths (save,
resume, consolidation, EMA) are exercised by CI on every run. On GPUs the stock
strategy is used unchanged.
"""
from __future__ import annotations

import argparse
import os
from typing import Any, Mapping, Optional, Union

import torch
from lightning.pytorch.strategies import DDPStrategy, DeepSpeedStrategy, Strategy
from lightning.pytorch.strategies.ddp import DDPStrategy as _DDP
from lightning_fabric.utilities.seed import reset_seed


class CPUDeepSpeedStrategy(DeepSpeedStrategy):
    """DeepSpeed ZeRO on CPU processes (gloo). Test and laptop use only; GPUs use the stock class."""

    strategy_name = "deepspeed_cpu"

    def setup_environment(self) -> None:
        # DeepSpeedStrategy.setup_environment only adds the CUDA check; keep DDP's behaviour.
        _DDP.setup_environment(self)

    def setup_distributed(self) -> None:
        # The stock version validates CUDA device indices, which CPU devices do not have.
        reset_seed()
        self.set_world_ranks()
        self._init_deepspeed_distributed()

    def _setup_model_and_optimizer(self, model, optimizer, lr_scheduler=None):
        import deepspeed

        # CPU devices have no index: DeepSpeed needs the local rank as its device rank.
        engine, ds_optimizer, _, _ = deepspeed.initialize(
            args=argparse.Namespace(device_rank=self.local_rank),
            config=self.config,
            model=model,
            model_parameters=filter(lambda p: p.requires_grad, model.parameters()),
            optimizer=optimizer,
            lr_scheduler=lr_scheduler,
            dist_init_required=False,
        )
        return engine, ds_optimizer


def wants_cpu(trainer_cfg: Any) -> bool:
    return trainer_cfg.accelerator == "cpu" or (trainer_cfg.accelerator == "auto" and not torch.cuda.is_available())


def cpu_threads(trainer_cfg: Any, environ: Optional[Mapping[str, str]] = None,
                cores: Optional[int] = None) -> Optional[int]:
    """Torch threads each process should use when training on the CPU, or None to leave torch's default.

    ``trainer.cpu_threads`` wins; else ``OMP_NUM_THREADS`` (torchrun and SLURM scripts set it) is
    left alone; else with several processes per node (``trainer.devices`` > 1) the node's cores
    are shared out, so 2 ranks on 2 cores run 1 thread each instead of 4 threads fighting
    over 2 cores. One process keeps torch's default.
    """
    env = os.environ if environ is None else environ
    if trainer_cfg.cpu_threads:
        return int(trainer_cfg.cpu_threads)
    if not wants_cpu(trainer_cfg) or env.get("OMP_NUM_THREADS") or int(trainer_cfg.devices) <= 1:
        return None
    return max(1, (cores or os.cpu_count() or 1) // int(trainer_cfg.devices))


def deepspeed_config(trainer_cfg: Any) -> dict:
    """The ZeRO config block for ``trainer_cfg`` (exposed for tests and the docs)."""
    stage = int(trainer_cfg.zero_stage)
    zero: dict = {"stage": stage, "contiguous_gradients": True, "overlap_comm": not wants_cpu(trainer_cfg)}
    if trainer_cfg.offload:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
        if stage == 3:
            zero["offload_param"] = {"device": "cpu", "pin_memory": True}
    if stage == 3:
        # Gather the full fp32 weights into the Lightning checkpoint on save so a ZeRO-3
        # run can be consolidated without DeepSpeed's helper script.
        zero["stage3_gather_16bit_weights_on_model_save"] = True
    return {"zero_optimization": zero, "zero_allow_untested_optimizer": True}


def build_strategy(trainer_cfg: Any, micro_batch: Optional[int] = None) -> Union[str, Strategy]:
    """Return the strategy for ``trainer.strategy`` (auto | ddp | deepspeed).

    Args:
        trainer_cfg: the ``trainer`` block (``TrainerConfig`` or its DictConfig).
        micro_batch: the per-device batch. DeepSpeed needs it in its config: Lightning
            otherwise reads it from the DataLoader's batch sampler, which our shard
            loaders (batched inside the workers) do not have.
    """
    name = trainer_cfg.strategy
    world = trainer_cfg.devices * trainer_cfg.num_nodes
    find_unused = bool(trainer_cfg.find_unused_parameters)
    if name == "deepspeed":
        cls = CPUDeepSpeedStrategy if wants_cpu(trainer_cfg) else DeepSpeedStrategy
        kwargs: dict = {"config": deepspeed_config(trainer_cfg)}
        if micro_batch:
            kwargs["config"]["train_micro_batch_size_per_gpu"] = int(micro_batch)
        if wants_cpu(trainer_cfg):
            kwargs["process_group_backend"] = "gloo"
        return cls(**kwargs)
    if name == "ddp" or (name == "auto" and world > 1):
        return DDPStrategy(find_unused_parameters=find_unused,
                           process_group_backend="gloo" if wants_cpu(trainer_cfg) else None)
    return "auto"


def is_deepspeed(strategy: Optional[Union[str, Strategy]]) -> bool:
    return isinstance(strategy, DeepSpeedStrategy)
