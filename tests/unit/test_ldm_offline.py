"""The shared per-shard offline job (dalle3/data/offline.py): split, atomic outputs, resume from the same input."""
from __future__ import annotations

import json
import os

import pytest

from dalle3.data.offline import completed, input_identity, path_identity, plan_shards, run_shard_job
from dalle3.dist.env import ArrayTask, DistEnv


def _shards(tmp_path, n):
    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    paths = []
    for i in range(n):
        p = src / f"{i:05d}.tar"
        p.write_text(f"shard {i}")
        paths.append(str(p))
    return paths


def _copy(src: str, dst: str) -> dict:
    with open(src) as f, open(dst, "w") as g:
        g.write(f.read().upper())
    return {"samples": 1}


@pytest.mark.parametrize("world, tasks", [(1, 1), (2, 1), (2, 4)])
def test_every_shard_is_done_exactly_once_over_any_layout(tmp_path, world, tasks):
    shards = _shards(tmp_path, 11)
    out = tmp_path / "out"
    seen = []

    def work(src, dst):
        seen.append(src)
        return _copy(src, dst)

    results = [run_shard_job(shards, str(out), work, env=DistEnv(rank=r, world_size=world),
                             task=ArrayTask(t, tasks)) for t in range(tasks) for r in range(world)]
    assert sorted(seen) == shards  # disjoint and covering
    assert sum(r["done"] for r in results) == 11 and sum(r["samples"] for r in results) == 11
    assert sorted(os.listdir(out / "_manifest")) == [f"{i:05d}.tar.json" for i in range(11)]
    assert (out / "00003.tar").read_text() == "SHARD 3"


def test_a_crashed_job_leaves_no_partial_output_and_a_rerun_does_only_the_rest(tmp_path):
    shards = _shards(tmp_path, 4)
    out = str(tmp_path / "out")
    calls = []

    def flaky(src, dst):
        calls.append(os.path.basename(src))
        if len(calls) == 3:
            with open(dst, "w") as f:
                f.write("half a shard")
            raise RuntimeError("preempted")
        return _copy(src, dst)

    with pytest.raises(RuntimeError):
        run_shard_job(shards, out, flaky, env=DistEnv())
    assert sorted(completed(out)) == ["00000.tar", "00001.tar"]
    assert not os.path.exists(os.path.join(out, "00002.tar"))  # only the tmp file, never the final name
    calls.clear()
    again = run_shard_job(shards, out, _copy_logged(calls), env=DistEnv())
    assert calls == ["00002.tar", "00003.tar"] and again["skipped"] == 2 and again["done"] == 2
    third = run_shard_job(shards, out, _copy_logged(calls), env=DistEnv())
    assert third["done"] == 0 and third["skipped"] == 4


def _copy_logged(calls):
    def work(src, dst):
        calls.append(os.path.basename(src))
        return _copy(src, dst)
    return work


def test_output_deleted_after_completion_is_redone(tmp_path):
    shards = _shards(tmp_path, 2)
    out = str(tmp_path / "out")
    run_shard_job(shards, out, _copy, env=DistEnv())
    os.remove(os.path.join(out, "00001.tar"))
    assert run_shard_job(shards, out, _copy, env=DistEnv())["done"] == 1


def test_colliding_output_names_are_refused(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    (a / "0.tar").write_text("x"), (b / "0.tar").write_text("y")
    with pytest.raises(ValueError, match="base name"):
        run_shard_job([str(a / "0.tar"), str(b / "0.tar")], str(tmp_path / "out"), _copy, env=DistEnv())


def test_a_rerun_skips_the_same_input_and_redoes_a_changed_one(tmp_path, caplog):
    shards = _shards(tmp_path, 3)
    out = str(tmp_path / "out")
    calls: list = []
    run_shard_job(shards, out, _copy_logged(calls), env=DistEnv())
    calls.clear()
    assert run_shard_job(shards, out, _copy_logged(calls), env=DistEnv())["skipped"] == 3 and calls == []
    with open(shards[1], "w") as f:  # same base name, other content (e.g. the recaptioned shard)
        f.write("recaptioned 1")
    st = os.stat(shards[2])
    os.utime(shards[2], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # same bytes, rewritten later
    again = run_shard_job(shards, out, _copy_logged(calls), env=DistEnv())
    assert calls == ["00001.tar", "00002.tar"] and (again["done"], again["skipped"]) == (2, 1)
    assert again["redone_input_changed"] == 2 and "made from another input" in caplog.text
    assert open(os.path.join(out, "00001.tar")).read() == "RECAPTIONED 1"
    assert completed(out)["00001.tar"]["source"] == input_identity(shards[1])


def test_an_entry_without_an_input_identity_is_redone(tmp_path):
    shards = _shards(tmp_path, 2)
    out = str(tmp_path / "out")
    run_shard_job(shards, out, _copy, env=DistEnv())
    entry_path = os.path.join(out, "_manifest", "00000.tar.json")
    with open(entry_path) as f:
        entry = json.load(f)
    entry.pop("source")  # as written before entries recorded their input
    with open(entry_path, "w") as f:
        json.dump(entry, f)
    again = run_shard_job(shards, out, _copy, env=DistEnv())
    assert (again["done"], again["skipped"], again["redone_input_changed"]) == (1, 1, 1)


def test_what_else_an_output_depends_on_is_part_of_its_identity(tmp_path):
    shards = _shards(tmp_path, 2)
    out = str(tmp_path / "out")
    model = tmp_path / "vae"
    model.mkdir()
    (model / "weights.bin").write_bytes(b"v1")
    ident = lambda s: input_identity(s, vae=path_identity(str(model)))  # noqa: E731
    run_shard_job(shards, out, _copy, env=DistEnv(), identity=ident)
    assert run_shard_job(shards, out, _copy, env=DistEnv(), identity=ident)["skipped"] == 2
    (model / "weights.bin").write_bytes(b"v2 retrained")
    assert run_shard_job(shards, out, _copy, env=DistEnv(), identity=ident)["redone_input_changed"] == 2


def test_a_crash_while_redoing_a_changed_shard_leaves_it_incomplete(tmp_path):
    shards = _shards(tmp_path, 2)
    out = str(tmp_path / "out")
    run_shard_job(shards, out, _copy, env=DistEnv())
    with open(shards[0], "w") as f:
        f.write("changed 0")

    def crash(src, dst):
        raise RuntimeError("preempted")

    with pytest.raises(RuntimeError):
        run_shard_job(shards, out, crash, env=DistEnv())
    assert sorted(completed(out)) == ["00001.tar"]  # not "done" from the old input any more


def test_plan_records_identities_that_survive_the_manifest_round_trip(tmp_path):
    shards = _shards(tmp_path, 2) + ["pipe:cat /nowhere/00009.tar"]
    plan = plan_shards(shards, str(tmp_path / "out"), DistEnv(), ArrayTask())
    assert plan.sources[shards[0]]["input"] == {"path": shards[0], "size": 7,
                                                "mtime_ns": os.stat(shards[0]).st_mtime_ns}
    assert plan.sources[shards[2]] == {"input": {"url": shards[2]}}
    assert json.loads(json.dumps(plan.sources)) == plan.sources
