"""Training side effects, one callback per file."""
from dalle3.callbacks.data_stats import DataStats
from dalle3.callbacks.ema import EMA
from dalle3.callbacks.sample_images import SampleImages

__all__ = ["DataStats", "EMA", "SampleImages"]
