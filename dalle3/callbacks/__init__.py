"""Training side effects shared by every stage, one callback per file (stage-only ones live with their stage)."""
from dalle3.callbacks.data_stats import DataStats
from dalle3.callbacks.ema import EMA

__all__ = ["DataStats", "EMA"]
