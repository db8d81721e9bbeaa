"""Training side effects, one callback per file."""
from dalle3.callbacks.data_stats import DataStats

__all__ = ["DataStats"]
