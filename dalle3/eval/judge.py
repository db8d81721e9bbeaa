"""The judge CLIP behind CLIP score: load it, score with it, and check that it can see.

CLIP score = 100 · max(cos(image embedding, text embedding), 0), as torchmetrics and the
paper. The judge is either

* the **world judge** (``eval.judge.model: null``): a small open_clip ``CLIP``
  (:mod:`dalle3.eval.model`) that ``dalle3-train stage=judge`` trains with open_clip's
  ``ClipLoss`` on the ground-truth DSC and alt captions of the ``judge`` split, which no
  captioner and no LDM reads; exported like a captioner (safetensors + open_clip model
  config + ``tokenizer.json``, :mod:`dalle3.captioner.export`), or
* **any open_clip model by name** (``eval.judge.model: ViT-B-32``, ``eval.judge.pretrained:
  laion2b_s34b_b79k`` or a local weights file), as the paper scores with a public CLIP.

The alt-pretrained captioner used to be the judge; alt-text never names a colour or a
size, so its towers could not tell a red circle from a blue one. :func:`validate_judge_model`
measures exactly that: retrieval on ``val`` and the share of pairs where the true DSC
caption beats a copy with one colour, count, position or shape changed (:mod:`dalle3.eval.edits`).
"""
from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from dalle3.config.validate import ConfigError
from dalle3.eval.edits import EDIT_KINDS, EDITS
from dalle3.utils.logging import get_logger

log = get_logger(__name__)

VALIDATION_FILE = "validation.json"
"The world judge's own validation, written into its export folder by stage=judge."


class JudgeScorer:
    """CLIP score with an open_clip model that has ``encode_image``/``encode_text``.

    Args:
        model: the CLIP (any open_clip ``CLIP``/``CustomTextCLIP``/``CoCa``).
        tokenizer: ``texts -> LongTensor[B, L]``.
        image_size: the side the image tower reads.
        mean, std: its input normalisation (open_clip's ``preprocess_cfg``).
        validation: the judge's own validation (:func:`validate_judge_model`), if known.
        batch_size: images or texts embedded per forward pass.
    """

    def __init__(self, model: nn.Module, tokenizer: Callable, image_size: int,
                 mean: Sequence[float] = (0.48145466, 0.4578275, 0.40821073),
                 std: Sequence[float] = (0.26862954, 0.26130258, 0.27577711),
                 validation: Optional[dict] = None, batch_size: int = 256):
        self.model, self.tokenizer, self.image_size = model.eval(), tokenizer, int(image_size)
        self.mean, self.std = tuple(mean), tuple(std)
        self.validation, self.batch_size = validation, int(batch_size)

    # -- construction ------------------------------------------------------
    @classmethod
    def from_config(cls, judge: Any) -> "JudgeScorer":
        """The judge an ``eval.judge`` block names: an open_clip model by name, else the world judge's export."""
        from dalle3.config.eval import validate_judge

        validate_judge(judge)
        if judge.model:
            return cls.from_open_clip(judge.model, judge.pretrained)
        if not _is_export(judge.export):
            raise ConfigError(f"eval.judge.export={judge.export!r} is not a judge export; allowed: the folder "
                              "`dalle3-train stage=judge` writes, or set eval.judge.model (an open_clip model)")
        return cls.from_export(judge.export)

    @classmethod
    def from_export(cls, folder: str) -> "JudgeScorer":
        """A judge exported by stage=judge (or any captioner export: its contrastive towers)."""
        from dalle3.captioner.export import load_exported
        from dalle3.captioner.model import model_image_size

        cap = load_exported(folder)
        path = Path(folder) / VALIDATION_FILE
        validation = json.loads(path.read_text()) if path.is_file() else None
        return cls(cap.model, cap.tokenizer, model_image_size(cap.model), validation=validation)

    @classmethod
    def from_open_clip(cls, name: str, pretrained: str) -> "JudgeScorer":
        """``open_clip.create_model(name, pretrained=tag or file)`` and its own tokenizer."""
        import open_clip

        from dalle3.captioner.model import model_image_size

        model = open_clip.create_model(name, pretrained=pretrained)
        pre = getattr(model.visual, "preprocess_cfg", None) or {}
        kwargs = {k: pre[k] for k in ("mean", "std") if pre.get(k)}
        return cls(model, open_clip.get_tokenizer(name), model_image_size(model), **kwargs)

    # -- scoring -----------------------------------------------------------
    def model_input(self, images: torch.Tensor) -> torch.Tensor:
        """[0, 1] RGB at any size -> the tower's normalised input (bicubic, antialiased)."""
        if images.shape[-2:] != (self.image_size, self.image_size):
            images = F.interpolate(images, size=self.image_size, mode="bicubic", antialias=True).clamp(0, 1)
        mean = images.new_tensor(self.mean).view(1, 3, 1, 1)
        return (images - mean) / images.new_tensor(self.std).view(1, 3, 1, 1)

    @torch.no_grad()
    def embed_images(self, images: torch.Tensor) -> torch.Tensor:
        """Unit-norm image embeddings [N, D] of images in [0, 1]."""
        device = next(self.model.parameters()).device
        out = [self.model.encode_image(self.model_input(images[i:i + self.batch_size].to(device)))
               for i in range(0, len(images), self.batch_size)]
        return F.normalize(torch.cat(out).float(), dim=-1)

    @torch.no_grad()
    def embed_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """Unit-norm text embeddings [M, D]."""
        device = next(self.model.parameters()).device
        texts = list(texts)
        out = [self.model.encode_text(self.tokenizer(texts[i:i + self.batch_size]).to(device))
               for i in range(0, len(texts), self.batch_size)]
        return F.normalize(torch.cat(out).float(), dim=-1)

    def similarity(self, images: torch.Tensor, texts: Sequence[str]) -> torch.Tensor:
        """Cosine similarity matrix [N images, M texts]."""
        return self.embed_images(images) @ self.embed_texts(texts).T

    def logits(self, images: torch.Tensor, texts: Sequence[str]) -> torch.Tensor:
        """The contrastive logits [N, M]: the learned logit scale times :meth:`similarity`."""
        scale = getattr(self.model, "logit_scale", None)
        factor = float(scale.detach().exp().reshape(-1)[0]) if scale is not None else 100.0
        return self.similarity(images, texts) * factor

    def cosine(self, images: torch.Tensor, texts: Sequence[str]) -> torch.Tensor:
        """Per-pair cosine [N] of image i and text i."""
        if len(images) != len(texts):
            raise ValueError(f"{len(images)} images but {len(texts)} texts; the scorer pairs them one to one")
        return (self.embed_images(images) * self.embed_texts(texts)).sum(-1)

    def __call__(self, images: torch.Tensor, texts: Sequence[str]) -> torch.Tensor:
        """Per-pair CLIP score [N] = 100 · max(cos, 0) for images [N, 3, H, W] in [0, 1] and their texts."""
        return 100 * self.cosine(images, texts).clamp(min=0)


def _is_export(folder: str) -> bool:
    from dalle3.captioner.export import is_export

    return is_export(folder)


def validate_judge_model(scorer: JudgeScorer, images: torch.Tensor, captions: Sequence[str],
                         seed: int = 0) -> dict:
    """The judge's own validation on held-out (image, DSC caption) pairs.

    Args:
        scorer: the judge.
        images: [N, 3, H, W] in [0, 1] (``val`` images at the side the judge will score).
        captions: their DSC captions.
        seed: seeds which edit each caption gets.

    Returns:
        ``{"pairs": N, "retrieval_top1", "retrieval_chance", "sensitivity": {kind: share},
        "control": {kind: share}, "edited": {kind: pairs}}``. ``retrieval_top1``: share of
        images whose own caption is the most similar of all N. ``sensitivity[kind]``: share
        of the pairs with an edit of that kind (``edited``) where the true caption scores
        above the edited one. ``control[kind]``: the same comparison against another image
        (the next one): near 0.5 when the sensitivity comes from the image, not from the
        edited text reading oddly.
    """
    captions = list(captions)
    sim, per_pair = sensitivity_pairs(scorer, images, captions, seed)
    n = len(captions)
    out: dict = {"pairs": n, "retrieval_top1": float((sim.argmax(1) == torch.arange(n)).float().mean()),
                 "retrieval_chance": 1 / max(n, 1), "sensitivity": {}, "control": {}, "edited": {}}
    for kind, pairs in per_pair.items():
        if pairs is None:
            out["sensitivity"][kind], out["control"][kind], out["edited"][kind] = None, None, 0
            continue
        _, wins, control = pairs
        out["sensitivity"][kind] = float(wins.float().mean())
        out["control"][kind] = float(control.float().mean())
        out["edited"][kind] = len(wins)
    return out


def sensitivity_pairs(scorer: JudgeScorer, images: torch.Tensor, captions: Sequence[str], seed: int = 0):
    """``(image x caption cosine matrix [N, N], {kind: (pair indices, wins, control wins) or None})``.

    The per-pair outcomes behind :func:`validate_judge_model`'s shares, so two judges can be
    compared pair by pair (``benchmarks/screens/judge_paired.py``).
    """
    captions = list(captions)
    img = scorer.embed_images(images)
    txt = scorer.embed_texts(captions)
    sim = img @ txt.T
    true_cos = sim.diagonal()
    other = img.roll(1, 0)
    per_pair: dict = {}
    for kind in EDIT_KINDS:
        rng = random.Random(f"{seed}:{kind}")
        pairs = [(i, e) for i, c in enumerate(captions) if (e := EDITS[kind](c, rng)) is not None]
        if not pairs:
            per_pair[kind] = None
            continue
        idx = torch.tensor([i for i, _ in pairs])
        edited = scorer.embed_texts([e for _, e in pairs])
        wins = true_cos[idx] > (img[idx] * edited).sum(-1)
        control = (other[idx] * txt[idx]).sum(-1) > (other[idx] * edited).sum(-1)
        per_pair[kind] = (idx, wins, control)
    return sim, per_pair


def load_val_pairs(spec: str, n: int, image_size: int) -> tuple[torch.Tensor, list[str]]:
    """The first ``n`` samples of shards ``spec`` (fixed order): images [n, 3, S, S] in [0, 1] at
    ``image_size`` (the data layer's resize, as training sees them) and their DSC captions."""
    from dalle3.data.pipeline import build_pipeline
    from dalle3.data.shards import expand_shards

    samples = [s for s in build_pipeline(expand_shards(spec), image_size=image_size, max_samples=n) if s.get("dsc")]
    if not samples:
        raise ConfigError(f"data.val_shards={spec!r} holds no samples with a DSC caption")
    return torch.stack([s["image"] for s in samples]), [s["dsc"] for s in samples]


def train_judge(cfg: Any) -> dict:
    """Train the world judge on ``data.train_shards`` (the judge split), export it, validate it on ``data.val_shards``.

    Captions: ``caption=blend caption.synthetic=dsc caption.ratio=0.5`` gives each sample its
    alt or its DSC caption per epoch, so the judge reads both kinds of prompt it will score.
    Empty alt-texts (5 % of them) are dropped: they carry nothing about their image, and all
    empty captions of a batch are one text that ClipLoss would have to match to several images.
    With ``eval.judge.twins`` each sample also brings a one-fact twin (:mod:`dalle3.eval.data`).
    """
    return train_world_clip(cfg, cfg.eval.judge, role="judge")


def train_world_clip(cfg: Any, clip: Any, role: str) -> dict:
    """Train a world CLIP with the recipe ``clip`` (a ``JudgeConfig``) on ``data.train_shards``, export it to
    ``<paths.run_dir>/export`` and validate it on ``data.val_shards``.

    The judge (``role="judge"``, :func:`train_judge`) and the LDM's text encoder
    (``role="text_encoder"``, ``stage=text_encoder``) are both such CLIPs, on different splits.
    """
    import lightning.pytorch as pl

    from dalle3.captioner.export import export_captioner, export_dir
    from dalle3.config.convert import to_dataclass
    from dalle3.config.schema import WorldConfig
    from dalle3.data.datamodule import ShardDataModule
    from dalle3.dist.zero import full_state_dict
    from dalle3.eval.data import TwinScenes, drop_empty_caption
    from dalle3.eval.module import JudgeModule
    from dalle3.trainer import fit

    t0 = time.time()
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    module = JudgeModule(clip, max_steps=cfg.trainer.max_steps)
    transform = (TwinScenes(to_dataclass(WorldConfig, cfg.world), cfg.data.image_size, cfg.seed,
                            dict(clip.twin_weights)) if clip.twins
                 else drop_empty_caption)
    datamodule = ShardDataModule(cfg.data, cfg.caption, seed=cfg.seed, sample_transform=transform)
    trainer = fit(module, datamodule, cfg)
    seconds = round(time.time() - t0, 1)
    keys = set(module.model.state_dict())
    weights = {k: v for k, v in full_state_dict(module.model).items() if k in keys}
    out = export_dir(cfg.paths.run_dir)
    metrics = {k: round(float(v), 4) for k, v in trainer.callback_metrics.items() if k.startswith(("train/", "val/"))}
    summary = {"run_dir": str(cfg.paths.run_dir), "export": str(out), "steps": int(trainer.global_step),
               "seconds": seconds, "train_shards": str(cfg.data.train_shards), **metrics}
    if trainer.is_global_zero:
        meta = {"stage": cfg.stage, "role": role, "step": int(trainer.global_step),
                "train_shards": str(cfg.data.train_shards), "image_size": int(clip.image_size)}
        export_captioner(module.judge, out, meta, state_dict=weights)
        scorer = JudgeScorer.from_export(str(out))
        validation = validate_judge_model(scorer, *load_val_pairs(cfg.data.val_shards, clip.val_samples,
                                                                  clip.image_size), seed=cfg.seed)
        from dalle3.utils.io import atomic_write_json

        atomic_write_json(out / VALIDATION_FILE, validation, indent=2)
        log.info("%s: retrieval %.3f, sensitivity %s", role, validation["retrieval_top1"], validation["sensitivity"])
        summary["validation"] = validation
    return summary
