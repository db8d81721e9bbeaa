"""Learning-rate schedules of the ldm and vae stages: warmup, then constant or a cosine to the floor."""
from __future__ import annotations

import pytest

from dalle3.config import ConfigError, compose
from dalle3.config.ldm import validate_ldm
from dalle3.ldm.module import lr_factor


def test_warmup_then_constant_by_default():
    assert [lr_factor(s, 50, 1500) for s in (0, 24, 49, 1000, 1499)] == [0.02, 0.5, 1.0, 1.0, 1.0]


def test_cosine_decays_to_the_floor_at_the_last_step():
    f = [lr_factor(s, 50, 1500, "cosine", 0.1) for s in (49, 50, 775, 1500, 2000)]
    assert f[0] == f[1] == 1.0 and f[2] == pytest.approx(0.55) and f[3] == f[4] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(f, f[1:]))


def test_a_bad_schedule_names_its_key():
    for key in ("ldm.train.lr_schedule", "ldm.vae_train.schedule"):
        cfg = compose([f"{key}=linear"])
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            validate_ldm(cfg.ldm)
