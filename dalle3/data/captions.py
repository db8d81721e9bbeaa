"""Which caption a sample trains on: alt-text, SSC, DSC, or the DALL-E 3 blend.

The blend (DALL-E 3 trains on 95% descriptive synthetic captions, else alt-text) is a seeded
pure function of (seed, epoch, sample key). No RNG state lives in a worker, so the
choice does not depend on worker count, rank layout, shuffling or resumption, and it
redraws every epoch.
"""
from __future__ import annotations

import hashlib
from typing import Any, Callable, Iterable, Iterator, Optional, Union

CAPTION_KINDS = ("alt", "ssc", "dsc")
"What ``caption_kind`` may say; anything but ``alt`` counts as synthetic."
SYNTHETIC_KINDS = ("ssc", "dsc")

_U64 = float(2**64)


def blend_draw(key: str, seed: int = 0, epoch: int = 0) -> float:
    """A uniform draw in [0, 1) determined by (seed, epoch, key) alone."""
    digest = hashlib.blake2b(f"{seed}:{epoch}:{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") / _U64


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
        img2dataset shard that was never recaptioned) falls back to the alt-text and
        reports kind ``alt``; a missing alt-text is ``""``.
    """
    if source == "blend":
        if synthetic not in SYNTHETIC_KINDS:
            raise ValueError(f"synthetic caption {synthetic!r} is not one of ssc | dsc")
        kind = synthetic if blend_draw(key, seed, epoch) < ratio else "alt"
    elif source in CAPTION_KINDS:
        kind = source
    else:
        raise ValueError(f"caption source {source!r} is not one of alt | ssc | dsc | blend")
    text = {"alt": alt, "ssc": ssc, "dsc": dsc}[kind]
    if kind != "alt" and not text:
        return alt or "", "alt"
    return text or "", kind


class PickCaption:
    """Pipeline stage: add ``caption`` and ``caption_kind`` to each decoded sample.

    ``epoch`` is an int, or a zero-argument callable read per sample (a stream that
    lives across epochs, see :class:`dalle3.data.loader.SharedEpoch`).
    """

    def __init__(self, source: str = "blend", synthetic: str = "dsc", ratio: float = 0.95,
                 seed: int = 0, epoch: Union[int, Callable[[], int]] = 0):
        self.source, self.synthetic, self.ratio = source, synthetic, ratio
        self.seed, self.epoch = seed, epoch

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
            yield sample
