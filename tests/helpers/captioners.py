"""Two tiny captioners with random weights, exported where the pipeline looks for them."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from dalle3.config import compose
from dalle3.config.captioner import captioner_export

TINY_CAPTIONER = [
    "captioner.arch.vision_layers=1", "captioner.arch.vision_width=32", "captioner.arch.vision_head_width=16",
    "captioner.arch.embed_dim=32", "captioner.arch.text_width=32", "captioner.arch.text_layers=1",
    "captioner.arch.decoder_layers=1", "captioner.arch.attn_pooler_queries=9", "captioner.arch.image_size=32",
    "captioner.arch.patch_size=8", "captioner.arch.text_heads=2", "captioner.arch.attn_pooler_heads=2"]
"Overrides for a captioner of a few thousand parameters on 32 px images (gibberish, real plumbing)."


def write_random_exports(out_dir: Path) -> Any:
    """Export a random SSC and a random DSC captioner under ``out_dir`` as the fine-tune stage would; return the config."""
    from dalle3.captioner.export import export_captioner
    from dalle3.captioner.model import build_captioner

    cfg = compose(["experiment=smoke", *TINY_CAPTIONER])
    for seed, kind in enumerate(["ssc", "dsc"]):
        torch.manual_seed(seed)
        export_captioner(build_captioner(cfg.captioner), captioner_export(str(out_dir), kind), {"target": kind})
    return cfg
