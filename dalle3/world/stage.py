"""`stage=data`: write the synthetic world's train/val/annotated shards."""
from __future__ import annotations

import time
from typing import Any

from dalle3.config.validate import check_positive, validate_world
from dalle3.utils.logging import get_logger

log = get_logger("dalle3.world")


def run(cfg: Any) -> dict:
    """Validate the world and datagen blocks, then write every split under ``paths.data_dir``."""
    validate_world(cfg.world)
    check_positive("datagen.shard_size", cfg.datagen.shard_size)
    from dalle3.world.writer import write_world  # after validation: bad input fails fast

    t0 = time.time()
    shards = write_world(cfg.paths.data_dir, cfg.datagen, cfg.world)
    n = sum(len(v) for v in shards.values()) if isinstance(shards, dict) else len(shards)
    log.info("wrote %d shards to %s in %.1f s", n, cfg.paths.data_dir, time.time() - t0)
    return {"data_dir": str(cfg.paths.data_dir), "shards": n, "seconds": round(time.time() - t0, 1)}
