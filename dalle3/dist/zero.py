"""What ZeRO-3 changes for a model, written once.

* **Frozen parts stay whole.** DeepSpeed's stage-3 engine partitions every parameter of
  the module it wraps, trainable or not, and then gathers the frozen VAE and text
  encoder again on every forward. :class:`Unpartitioned` holds such a part *outside*
  the module tree (not a registered child), so it is never partitioned, never in a
  checkpoint, and each rank keeps one plain copy on its device.
* **Reading partitioned weights.** :func:`gathered` is a context in which a
  partitioned parameter holds its full value (all ranks must enter it: it is a
  collective); outside ZeRO-3 it does nothing. The EMA callback and sample logging
  read weights through it, so they are correct under DDP, ZeRO-2 and ZeRO-3 alike.
* **One file out.** :func:`load_checkpoint` reads a Lightning ``.ckpt`` file or a
  DeepSpeed checkpoint folder (partitioned fp32 master weights are merged), and
  :func:`consolidate` writes one fp32 safetensors file from either.
* **Sizes held per rank**, read from the engine, for the tests that show ZeRO's saving.
"""
from __future__ import annotations

import contextlib
import os
from typing import Any, Iterable, Iterator, Optional

import torch
from torch import nn

from dalle3.utils.io import atomic_path


class Unpartitioned:
    """Holds a frozen module out of the LightningModule's tree (hence out of ZeRO-3).

    Use ``holder.module`` to call it and :meth:`to` to move it with the trainer's device.
    """

    def __init__(self, module: nn.Module):
        self.module = module

    def to(self, device: Any) -> "Unpartitioned":
        self.module.to(device)
        return self

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.module(*args, **kwargs)


def is_partitioned(param: torch.Tensor) -> bool:
    """True for a ZeRO-3 parameter (it carries DeepSpeed's ``ds_id``)."""
    return hasattr(param, "ds_id")


@contextlib.contextmanager
def gathered(params: Iterable[torch.nn.Parameter]) -> Iterator[None]:
    """Full values of (possibly ZeRO-3-partitioned) parameters inside the block, read-only.

    Every rank must enter the block with the same parameters. Gathers only parameters
    that are partitioned; a no-op for DDP, ZeRO-1/2 or a single process.
    """
    params = [p for p in params if is_partitioned(p)]
    if not params:
        yield
        return
    import deepspeed

    with deepspeed.zero.GatheredParameters(params, modifier_rank=None):
        yield


def full_state_dict(module: nn.Module, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """A CPU copy of ``module``'s parameters and buffers, gathered if partitioned (collective)."""
    out: dict[str, torch.Tensor] = {}
    for name, param in module.named_parameters():
        with gathered([param]):  # one at a time: peak memory is one full parameter
            out[name] = param.detach().to("cpu", dtype, copy=True)
    for name, buf in module.named_buffers():
        out[name] = buf.detach().to("cpu", copy=True)
    return out


# --------------------------------------------------------------------------- checkpoints
def _is_deepspeed_dir(path: str) -> bool:
    return os.path.isdir(path) and os.path.isfile(os.path.join(path, "latest"))


def load_checkpoint(path: str) -> dict:
    """A training checkpoint as Lightning's dict (``state_dict``, ``callbacks``, ``global_step``...).

    Args:
        path: a Lightning ``.ckpt`` file, or a DeepSpeed checkpoint folder (ZeRO 1-3),
            whose per-rank fp32 partitions are merged into one full ``state_dict``.
    """
    if not _is_deepspeed_dir(path):
        # Lightning's own checkpoints hold tensors and plain containers only
        return torch.load(path, map_location="cpu", weights_only=True)
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    state_dict = get_fp32_state_dict_from_zero_checkpoint(path)
    with open(os.path.join(path, "latest")) as f:
        tag_dir = os.path.join(path, f.read().strip())
    # rank 0's model-state file (ZeRO-3 names it per rank); found by name, so the optimizer
    # partitions (as large as the model, and pickled) are never read just to learn the stage
    names = ("zero_pp_rank_0_mp_rank_00_model_states.pt", "mp_rank_00_model_states.pt")
    model_state = next((os.path.join(tag_dir, n) for n in names if os.path.exists(os.path.join(tag_dir, n))), None)
    if model_state is None:
        raise FileNotFoundError(f"{tag_dir}: no DeepSpeed model-state file ({' or '.join(names)})")
    client = torch.load(model_state, map_location="cpu", weights_only=True)
    skip = {"module", "optimizer", "lr_scheduler", "csr_tensor_module_names", "skipped_steps", "global_steps",
            "dp_world_size", "mp_world_size"}
    ckpt = {k: v for k, v in client.items() if k not in skip}
    ckpt["state_dict"] = {k.removeprefix("_forward_module."): v.float() for k, v in state_dict.items()}
    return ckpt


def module_weights(ckpt: dict, prefix: str = "unet.", ema_key: Optional[str] = "EMA") -> dict[str, torch.Tensor]:
    """The weights of one submodule from a checkpoint dict, keys without ``prefix``.

    Args:
        ckpt: from :func:`load_checkpoint`.
        prefix: the submodule's name in the LightningModule, with the dot.
        ema_key: take the EMA shadow stored by the callback with this state key
            instead (falls back to the raw weights when the checkpoint has no EMA); ``None``: raw.
    """
    if ema_key and ema_key in ckpt.get("callbacks", {}):
        shadow = ckpt["callbacks"][ema_key]["shadow"]
        return {k.removeprefix(prefix): v.float() for k, v in shadow.items() if k.startswith(prefix)}
    return {k.removeprefix(prefix): v.float() for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}


def consolidate(path: str, out_file: str, prefix: str = "unet.", ema: bool = False) -> str:
    """Write one fp32 safetensors file of a submodule's weights from any checkpoint.

    Args:
        path: a Lightning ``.ckpt`` file or a DeepSpeed (ZeRO) checkpoint folder.
        out_file: the ``.safetensors`` file (written atomically).
        prefix: submodule whose weights to keep (``""``: the whole module).
        ema: write the EMA weights instead of the raw ones.

    Returns:
        ``out_file``; its metadata holds ``global_step`` and ``ema``.
    """
    from safetensors.torch import save_file

    ckpt = load_checkpoint(path)
    weights = module_weights(ckpt, prefix, "EMA" if ema else None)
    if ema and "EMA" not in ckpt.get("callbacks", {}):
        raise ValueError(f"{path} holds no EMA weights")
    with atomic_path(out_file) as tmp:
        save_file({k: v.contiguous() for k, v in weights.items()}, tmp,
                  metadata={"global_step": str(ckpt.get("global_step", 0)), "ema": str(bool(ema))})
    return out_file


# --------------------------------------------------------------------------- sizes held
def rank_memory(trainer: Any) -> dict[str, int]:
    """Elements this rank holds: ``params`` (of the trained module) and ``optimizer_state``.

    Read from the DeepSpeed engine when there is one: a ZeRO-3 parameter counts its
    local partition (``ds_tensor``); optimizer state is the (inner) optimizer's state
    tensors, which ZeRO-1/2/3 keep for this rank's flat partition only.
    """
    from dalle3.dist.strategy import is_deepspeed

    module = trainer.strategy.model if is_deepspeed(trainer.strategy) else trainer.lightning_module
    params = sum((p.ds_tensor.numel() if is_partitioned(p) else p.numel()) for p in module.parameters()
                 if p.requires_grad or is_partitioned(p))
    optimizer = trainer.strategy.model.optimizer if is_deepspeed(trainer.strategy) else trainer.optimizers[0]
    inner = getattr(optimizer, "optimizer", optimizer)  # DeepSpeed's wrapper holds the torch optimizer
    state = sum(t.numel() for s in inner.state.values() for t in s.values()
                if torch.is_tensor(t) and t.dim() > 0)
    return {"params": int(params), "optimizer_state": int(state)}

