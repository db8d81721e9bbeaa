"""The world stage (`dalle3-world`, `stage=world`): write the synthetic world's shards (every split of
:data:`dalle3.world.writer.SPLITS`)."""
from __future__ import annotations

import time
from typing import Any

from dalle3.config.world import validate_datagen, validate_world
from dalle3.utils.logging import get_logger

log = get_logger("dalle3.world")


def run_world(cfg: Any) -> dict:
    """Validate the world and datagen blocks, then write every split under ``paths.data_dir``."""
    validate_world(cfg.world)
    validate_datagen(cfg.datagen)
    from dalle3.world.writer import write_world  # after validation: bad input fails fast

    t0 = time.time()
    shards = write_world(cfg.paths.data_dir, cfg.datagen, cfg.world)
    n = sum(len(v) for v in shards.values()) if isinstance(shards, dict) else len(shards)
    log.info("wrote %d shards to %s in %.1f s", n, cfg.paths.data_dir, time.time() - t0)
    return {"data_dir": str(cfg.paths.data_dir), "shards": n, "seconds": round(time.time() - t0, 1)}
