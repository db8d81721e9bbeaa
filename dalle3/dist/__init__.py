"""All distributed knowledge of dalle3: rank/world size, work splitting, strategies."""
from dalle3.dist.env import ArrayTask, DistEnv, array_task, dist_env

__all__ = ["ArrayTask", "DistEnv", "array_task", "dist_env"]
