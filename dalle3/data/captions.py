"""Which caption a sample trains on: alt-text, SSC, DSC, or the DALL-E 3 blend.

The blend (DALL-E 3 trains on 95% descriptive synthetic captions, else alt-text) is a seeded
pure function of (seed, epoch, sample key). No RNG state lives in a worker, so the
choice does not depend on worker count, rank layout, shuffling or resumption, and it
redraws every epoch.

A sample that has no caption of the wanted synthetic kind (a shard that was never
recaptioned, or a sample the recaption job could not caption: its JSON says
``"recaption": "failed"`` and holds no ``ssc``/``dsc``, see :mod:`dalle3.data.sidecar`)
trains on its alt-text. :class:`PickCaption` marks each such sample
(``caption_fallback``), counts them per reader (:attr:`PickCaption.fallbacks`) and warns
like :class:`dalle3.data.skips.SkipLog` does: the first few with their keys, then one
line every ``warn_every``. Summing ``caption_fallback`` over batches in the main process
gives the total, whatever the number of workers or ranks (:data:`FALLBACK_COUNT`).
"""
from __future__ import annotations

import hashlib
from typing import Any, Callable, Iterable, Iterator, Optional, Union

from dalle3.utils.logging import get_logger

log = get_logger(__name__)

CAPTION_KINDS = ("alt", "ssc", "dsc")
"What ``caption_kind`` may say; anything but ``alt`` counts as synthetic."
SYNTHETIC_KINDS = ("ssc", "dsc")
FALLBACK_FIELD = "caption_fallback"
"Sample/batch field: ``True`` where a synthetic caption was wanted but missing, so the alt-text was given."
FALLBACK_COUNT = "synthetic_fallback_alt"
"What a summary calls the number of such samples (the sum of :data:`FALLBACK_FIELD`)."

_U64 = float(2**64)


def blend_draw(key: str, seed: int = 0, epoch: int = 0) -> float:
    """A uniform draw in [0, 1) determined by (seed, epoch, key) alone."""
    digest = hashlib.blake2b(f"{seed}:{epoch}:{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") / _U64


def wanted_kind(key: str, source: str, synthetic: str = "dsc", ratio: float = 0.95, seed: int = 0,
                epoch: int = 0) -> str:
    """The caption kind ``source`` asks of this sample (the blend's draw), before any fallback."""
    if source == "blend":
        if synthetic not in SYNTHETIC_KINDS:
            raise ValueError(f"synthetic caption {synthetic!r} is not one of ssc | dsc")
        return synthetic if blend_draw(key, seed, epoch) < ratio else "alt"
    if source in CAPTION_KINDS:
        return source
    raise ValueError(f"caption source {source!r} is not one of alt | ssc | dsc | blend")


def pick_caption(key: str, alt: Optional[str], ssc: Optional[str], dsc: Optional[str], source: str,
                 synthetic: str = "dsc", ratio: float = 0.95, seed: int = 0, epoch: int = 0) -> tuple[str, str]:
    """Choose the training caption of one sample.

    Args:
        key: the sample key (drives the blend draw).
        alt, ssc, dsc: the sample's captions; ``None`` or ``""`` means missing.
        source: ``alt`` | ``ssc`` | ``dsc`` | ``blend``.
        synthetic: the synthetic kind ``blend`` uses (``ssc`` | ``dsc``).
        ratio: blend only: probability of the synthetic caption.
        seed, epoch: with ``key``, fix the blend draw.

    Returns:
        ``(text, kind)``. A wanted synthetic caption that is missing (e.g. a plain
        img2dataset shard that was never recaptioned, or a sample the recaption job
        could not caption) falls back to the alt-text and reports kind ``alt``; a
        missing alt-text is ``""``.
    """
    kind = wanted_kind(key, source, synthetic, ratio, seed, epoch)
    text = {"alt": alt, "ssc": ssc, "dsc": dsc}[kind]
    if kind != "alt" and not text:
        return alt or "", "alt"
    return text or "", kind


class PickCaption:
    """Pipeline stage: add ``caption``, ``caption_kind`` and ``caption_fallback`` to each decoded sample.

    ``epoch`` is an int, or a zero-argument callable read per sample (a stream that
    lives across epochs, see :class:`dalle3.data.loader.SharedEpoch`). Fallbacks to
    alt-text are counted in :attr:`fallbacks` and warned about (see the module docstring).
    """

    def __init__(self, source: str = "blend", synthetic: str = "dsc", ratio: float = 0.95,
                 seed: int = 0, epoch: Union[int, Callable[[], int]] = 0, warn_first: int = 10,
                 warn_every: int = 1000):
        self.source, self.synthetic, self.ratio = source, synthetic, ratio
        self.seed, self.epoch = seed, epoch
        self.warn_first, self.warn_every = warn_first, warn_every
        self.fallbacks = 0
        "Samples of this reader that wanted a synthetic caption and got the alt-text."

    @classmethod
    def from_config(cls, cfg: Any, epoch: Union[int, Callable[[], int]] = 0) -> "PickCaption":
        """From a ``CaptionConfig`` (dataclass or OmegaConf node)."""
        return cls(cfg.source, cfg.synthetic, float(cfg.ratio), int(cfg.seed), epoch)

    def __call__(self, samples: Iterable[dict]) -> Iterator[dict]:
        for sample in samples:
            epoch = self.epoch() if callable(self.epoch) else self.epoch
            sample["caption"], sample["caption_kind"] = pick_caption(
                sample["key"], sample.get("alt"), sample.get("ssc"), sample.get("dsc"), self.source,
                self.synthetic, self.ratio, self.seed, epoch)
            wanted = wanted_kind(sample["key"], self.source, self.synthetic, self.ratio, self.seed, epoch)
            sample[FALLBACK_FIELD] = sample["caption_kind"] != wanted
            if sample[FALLBACK_FIELD]:
                self.record(sample, wanted)
            yield sample

    def record(self, sample: dict, wanted: str) -> None:
        self.fallbacks += 1
        n = self.fallbacks
        if n <= self.warn_first:
            log.warning("sample %r%s has no %s caption (never recaptioned, or the recaption job could not caption "
                        "it); it trains on its alt-text", sample["key"],
                        f" in {sample['url']}" if sample.get("url") else "", wanted)
        elif n % self.warn_every == 0:
            log.warning("%d samples so far in this reader had no synthetic caption and trained on their alt-text "
                        "(%s); latest %r", n, FALLBACK_COUNT, sample["key"])
