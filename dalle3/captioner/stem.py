"""A convolutional stem for open_clip's ViT image tower (``captioner.arch.stem: conv``).

open_clip's ViT embeds patches with one strided convolution (``visual.conv1``, kernel =
stride = patch size). On the 64 px synthetic world that tower learns shapes slowly: a
shape-counting probe on its tokens stayed near chance for hundreds of steps, while a small
CNN reached 0.98 (benchmarks/RESULTS.md). A stem of overlapping 3x3 stride-2 convolutions
(Xiao et al. 2021, "Early convolutions help transformers see better") produces the same
``(batch, width, grid, grid)`` tokens, so it replaces ``visual.conv1`` and everything after
it (position embeddings, blocks, the KV-cached generator) is open_clip's own code.

The weights then hold ``visual.conv1.<i>.*`` instead of ``visual.conv1.weight``, so a plain
``open_clip.create_model(name, pretrained=file)`` no longer fits them; build such a model
with :func:`dalle3.captioner.model.create_coca` (what ``load_exported`` does), which calls
open_clip and then :func:`add_conv_stem`. ``stem: patch`` keeps open_clip's own layout.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Optional, Sequence

from torch import nn

from dalle3.config.captioner import STEM_NORMS


@dataclass(frozen=True)
class StemSpec:
    """What a conv stem is: its intermediate channels and its normalisation (``captioner.json``'s ``conv_stem``)."""

    channels: tuple[int, ...]
    norm: str = "none"

    @classmethod
    def from_json(cls, value: Any) -> Optional["StemSpec"]:
        """From an export's ``conv_stem``: null, a dict, or a bare channel list (exports before
        ``stem_norm`` existed, whose stems used GroupNorm)."""
        if value is None:
            return None
        if isinstance(value, dict):
            return cls(tuple(int(c) for c in value["channels"]), str(value.get("norm", "group")))
        return cls(tuple(int(c) for c in value), "group")

    def to_json(self) -> dict:
        return {**asdict(self), "channels": list(self.channels)}


class ConvStem(nn.Sequential):
    """``len(channels) + 1`` conv3x3 stride-2 layers (an optional norm + GELU between): 3 → ... → width.

    Downsamples by ``2 ** (len(channels) + 1)``, which must equal the patch size.
    """

    def __init__(self, channels: Sequence[int], width: int, norm: str = "none"):
        if norm not in STEM_NORMS:
            raise ValueError(f"captioner.arch.stem_norm={norm!r}; allowed: {' | '.join(STEM_NORMS)}")
        chans = [3, *channels, width]
        layers: list[nn.Module] = []
        for i, (c_in, c_out) in enumerate(zip(chans[:-1], chans[1:])):
            last = i == len(chans) - 2
            layers.append(nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=last or norm == "none"))
            if not last:
                layers += [nn.GroupNorm(1, c_out), nn.GELU()] if norm == "group" else [nn.GELU()]
        super().__init__(*layers)


def stem_patch_size(channels: Sequence[int]) -> int:
    """The patch size a stem with these intermediate channels stands in for."""
    return 2 ** (len(channels) + 1)


def check_stem(channels: Sequence[int], patch_size: int) -> None:
    """ValueError unless the stem downsamples by exactly ``patch_size``."""
    if not channels or any(int(c) <= 0 for c in channels):
        raise ValueError(f"captioner.arch.stem_channels={list(channels)}; allowed: a non-empty list of positive ints")
    if stem_patch_size(channels) != patch_size:
        want = int(math.log2(patch_size)) - 1 if patch_size > 1 and patch_size & (patch_size - 1) == 0 else None
        allowed = f"{want} channel counts for patch_size={patch_size}" if want else "a power-of-two patch_size"
        raise ValueError(f"captioner.arch.stem_channels={list(channels)} downsample by {stem_patch_size(channels)} "
                         f"but captioner.arch.patch_size={patch_size}; allowed: {allowed}")


def add_conv_stem(model: nn.Module, stem: StemSpec) -> nn.Module:
    """Replace ``model.visual.conv1`` (open_clip's patch embedding) by a :class:`ConvStem`; return ``model``."""
    visual = model.visual
    conv1 = visual.conv1
    if not isinstance(conv1, nn.Conv2d):
        raise ValueError(f"{type(model).__name__}.visual.conv1 is a {type(conv1).__name__}, not open_clip's patch "
                         "convolution (is the stem already there?)")
    check_stem(stem.channels, conv1.stride[0])
    visual.conv1 = ConvStem(stem.channels, conv1.out_channels, stem.norm).to(conv1.weight.device)
    return model
