"""One rank-aware logger for the whole package.

Rank zero logs at INFO; other ranks log WARNING and above only, prefixed with their
rank, so a 100-node job prints one progress stream but every rank's errors.
"""
from __future__ import annotations

import logging
import sys

from dalle3.dist.env import dist_env

_CONFIGURED = False


class _RankFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        env = dist_env()
        record.rank_prefix = f"[rank {env.rank}/{env.world_size}] " if env.world_size > 1 else ""
        return env.is_rank_zero or record.levelno >= logging.WARNING


def get_logger(name: str = "dalle3") -> logging.Logger:
    """Return the package logger (``dalle3.<module>``), configured once."""
    global _CONFIGURED
    root = logging.getLogger("dalle3")
    if not _CONFIGURED:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(rank_prefix)s%(levelname)s %(name)s: %(message)s",
                                               "%H:%M:%S"))
        handler.addFilter(_RankFilter())
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        root.propagate = False
        _CONFIGURED = True
    return root if name == "dalle3" else root.getChild(name.removeprefix("dalle3."))
