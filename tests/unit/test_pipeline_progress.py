"""The pipeline's live progress line: step i/N, its name, elapsed time and estimated time left."""
from __future__ import annotations

import io

from dalle3.pipeline import Progress, Step


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


STEPS = [Step("world"), Step("judge"), Step("ldm", label="ldm_alt_seed0"), Step("eval")]


def test_the_line_names_the_step_its_place_elapsed_and_time_left():
    clock, out = Clock(), io.StringIO()
    previous = {"steps": [{"step": "world", "status": "done", "seconds": 10}, {"step": "judge", "status": "done", "seconds": 30},
                          {"step": "ldm_alt_seed0", "status": "done", "seconds": 50}, {"step": "eval", "status": "done", "seconds": 10}]}
    bar = Progress(STEPS, previous, stream=out, clock=clock)
    bar.show(0)
    assert out.getvalue().strip() == "[dalle3-pipeline 1/4] world | 0m00s elapsed | ~1m40s left"
    clock.t += 20  # world took twice its estimate: the rest is scaled by 2
    bar.finish(0, 20.0)
    bar.show(1)
    assert out.getvalue().splitlines()[-1] == "[dalle3-pipeline 2/4] judge | 0m20s elapsed | ~3m00s left"
    clock.t += 15  # halfway through judge's 60 s (scaled) estimate
    assert bar.line(1) == "[dalle3-pipeline 2/4] judge | 0m35s elapsed | ~2m45s left"


def test_without_a_previous_run_the_estimate_is_the_reference_time_of_each_stage():
    bar = Progress(STEPS, None, stream=io.StringIO(), clock=Clock())
    assert bar.left(0) == sum(bar.estimate) and bar.estimate[1] > bar.estimate[0]
    clock = Clock()
    out = io.StringIO()
    bar = Progress(STEPS[:1], None, stream=out, clock=clock)
    clock.t += 7
    bar.finish(0, 7.0)
    assert "all 1 steps done in 0m07s" in out.getvalue()


def test_a_long_step_repeats_the_line_while_it_runs():
    import time

    out = io.StringIO()
    bar = Progress(STEPS, None, stream=out)
    with bar.during(2, every=0.05):
        time.sleep(0.3)
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("[dalle3-pipeline 3/4] ldm_alt_seed0 | ")
    assert len(lines) >= 3 and all(line.startswith("[dalle3-pipeline 3/4] ldm_alt_seed0 running | ") for line in lines[1:])


def test_ldm_runs_go_side_by_side_in_lanes_and_every_other_step_alone():
    from dalle3.config.pipeline import resolve_lanes
    from dalle3.pipeline import lane_groups, lane_threads

    steps = [Step("latents"), *(Step("ldm", label=f"ldm_{i}") for i in range(3)), Step("eval")]
    assert [(i, [s.name for s in g]) for i, g in lane_groups(steps, 2)] == \
        [(0, ["latents"]), (1, ["ldm_0", "ldm_1"]), (3, ["ldm_2"]), (4, ["eval"])]
    assert len(lane_groups(steps, 1)) == 5
    assert lane_threads(2, cores=2) == 1 and lane_threads(2, cores=16) == 8 and lane_threads(3, cores=2) == 1
    assert resolve_lanes(0, cores=2, gpu=False) == 2 and resolve_lanes(0, cores=2, gpu=True) == 1
    assert resolve_lanes(0, cores=1, gpu=False) == 1 and resolve_lanes(3, cores=2, gpu=True) == 3


def test_a_visible_gpu_is_used_with_no_flag_unless_a_trainer_is_chosen():
    from dalle3.pipeline import device_overrides

    assert device_overrides([], gpu=True) == ["trainer.accelerator=gpu"] and device_overrides([], gpu=False) == []
    assert device_overrides(["trainer=ddp"], gpu=True) == [] and device_overrides(["seed=1"], gpu=True) == ["trainer.accelerator=gpu"]
