"""Bookkeeping for samples the pipeline had to drop.

A bad sample (corrupt image, bad text, ...) never stops training: the decode stage
raises :class:`BadSample`, and the stage that catches it hands it to this reader's
:class:`SkipLog`. The log

* warns once per bad sample with its key and reason (the first ``warn_first`` of
  them per reader; after that one summary warning every ``warn_every`` skips, so a
  rotten shard cannot flood the log);
* keeps per-reason totals (:attr:`SkipLog.counts`);
* queues ``(key, reason)`` pairs until the batching stage drains them into the next
  batch as ``n_skipped``/``skipped``. That is how counts cross the DataLoader worker
  boundary: each batch carries the skips its worker saw since its previous batch,
  so summing ``n_skipped`` over batches in the main process gives the total, whatever
  the number of workers or ranks. Training streams outlive epochs, so skips after a
  worker's last batch of an epoch arrive with its first batch of the next one; only
  skips after the last batch of a finite stream (validation) stay in the worker's log
  (they are still warned about).

One log exists per reader (DataLoader worker, or the main process with 0 workers),
built with each pipeline inside its reader, so nothing is shared across processes.
"""
from __future__ import annotations

from collections import Counter
from typing import Optional

from dalle3.utils.logging import get_logger

SKIP_REASONS = ("no_image", "empty_image", "bad_image", "too_large", "bad_text", "bad_json", "tar_error",
                "no_text_embedding")
"Why a sample was dropped: no image member, zero-byte image, undecodable or truncated image, image over the pixel limit, non-UTF-8 text, unparsable JSON, unreadable tar data, a latent sample without a usable stored text embedding (dalle3/ldm/data.py)."

log = get_logger(__name__)


class BadSample(Exception):
    """A sample that cannot be used; ``reason`` is one of :data:`SKIP_REASONS`."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason, self.detail = reason, detail


class SkipLog:
    """Counts, reports and queues the skipped samples of one reader."""

    def __init__(self, warn_first: int = 10, warn_every: int = 1000):
        self.warn_first, self.warn_every = warn_first, warn_every
        self.counts: Counter[str] = Counter()
        self.pending: list[tuple[str, str]] = []
        self.n_good = 0
        "Samples decoded successfully (the starvation guard in the shard source watches it)."

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def record(self, key: str, reason: str, detail: str = "", url: Optional[str] = None) -> None:
        self.counts[reason] += 1
        self.pending.append((key, reason))
        n = self.total
        where = f" in {url}" if url else ""
        if n <= self.warn_first:
            log.warning("skipped sample %r%s: %s%s", key, where, reason, f" ({detail[:200]})" if detail else "")
        elif n % self.warn_every == 0:
            log.warning("skipped %d samples so far in this reader (%s); latest %r%s: %s",
                        n, self.summary(), key, where, reason)

    def drain(self) -> list[tuple[str, str]]:
        """Return and forget the ``(key, reason)`` pairs queued since the last drain."""
        out, self.pending = self.pending, []
        return out

    def summary(self) -> str:
        return ", ".join(f"{r}: {c}" for r, c in sorted(self.counts.items())) or "none"
