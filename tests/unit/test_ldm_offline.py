"""The shared per-shard offline job (dalle3/data/offline.py): split, atomic outputs, resume from the same input."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from dalle3.config import ConfigError
from dalle3.data.lease import Heartbeat, Holder, acquire, lease_path, read_lease, this_process
from dalle3.data.offline import commit_shard, completed, input_identity, output_names, path_identity, plan_shards, \
    run_shard_job, tmp_output, verify_committed
from dalle3.data.shards import validate_shards
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
    assert sorted(os.listdir(out / "_manifest")) == [f"{i:05d}.tar.json" for i in range(11)] + ["_leases"]
    assert not os.listdir(out / "_manifest" / "_leases")  # every lease released
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


def test_repeated_base_names_are_named_by_their_path_under_the_common_folder(tmp_path):
    for folder, text in (("a", "x"), ("b", "y"), ("a/deep", "z")):
        (tmp_path / folder).mkdir(parents=True)
        (tmp_path / folder / "0.tar").write_text(text)
    shards = [str(tmp_path / "a" / "0.tar"), str(tmp_path / "b" / "0.tar"), str(tmp_path / "a/deep" / "0.tar")]
    out = str(tmp_path / "out")
    assert run_shard_job(shards, out, _copy, env=DistEnv())["done"] == 3
    assert sorted(f for f in os.listdir(out) if f.endswith(".tar")) == ["a_0.tar", "a_deep_0.tar", "b_0.tar"]
    assert open(os.path.join(out, "b_0.tar")).read() == "Y"
    entry = completed(out)["a_deep_0.tar"]
    assert entry["source"]["input"] == {"path": shards[2], "size": 1, "mtime_ns": os.stat(shards[2]).st_mtime_ns}
    assert run_shard_job(shards, out, _copy, env=DistEnv())["skipped"] == 3  # the names are stable
    assert list(output_names(shards[:2:]).values()) == ["a_0.tar", "b_0.tar"]
    assert list(output_names([shards[0], str(tmp_path / "b" / "1.tar")]).values()) == ["0.tar", "1.tar"]


def test_inputs_whose_flattened_names_still_collide_are_refused_naming_both(tmp_path):
    shards = [str(tmp_path / "a_b" / "0.tar"), str(tmp_path / "a" / "b_0.tar"), str(tmp_path / "c" / "0.tar")]
    with pytest.raises(ValueError, match=r"input shards '.*a_b/0.tar' and '.*a/b_0.tar' would both be written as"):
        output_names(shards)


def test_a_list_file_naming_a_missing_shard_fails_with_one_line_naming_the_file(tmp_path):
    (tmp_path / "0.tar").write_text("x")
    listing = tmp_path / "inputs.txt"
    listing.write_text("0.tar\nmissing.tar\n")
    with pytest.raises(ConfigError) as err:
        validate_shards("recaption.input_shards", str(listing))
    assert "\n" not in str(err.value) and "missing.tar" in str(err.value) and str(listing) in str(err.value)


def test_the_manifest_records_who_did_the_work(tmp_path):
    shards = _shards(tmp_path, 1)
    out = str(tmp_path / "out")
    run_shard_job(shards, out, _copy, env=DistEnv(rank=0, world_size=1))
    worker = completed(out)["00000.tar"]["worker"]
    assert (worker["host"], worker["pid"], worker["rank"]) == (socket.gethostname(), os.getpid(), 0)
    assert completed(out)["00000.tar"]["output_bytes"] == len("SHARD 0")
    assert not os.listdir(os.path.join(out, "_manifest", "_leases"))  # released after the commit


def test_a_shard_leased_by_a_live_process_is_waited_for_and_not_done_twice(tmp_path):
    shards = _shards(tmp_path, 2)
    out = str(tmp_path / "out")
    other = Holder(socket.gethostname(), os.getpid(), "othertok", rank=1)  # alive: this very process
    lease = acquire(out, "00001.tar", other)
    tmp = tmp_output(os.path.join(out, "00001.tar"), DistEnv(rank=1, world_size=2), ArrayTask(), other)

    def other_process_finishes():
        time.sleep(1.0)
        _copy(shards[1], tmp)
        commit_shard(out, shards[1], tmp, "00001.tar", {"samples": 1}, input_identity(shards[1]), lease)

    thread = threading.Thread(target=other_process_finishes)
    thread.start()
    calls: list = []
    summary = run_shard_job(shards, out, _copy_logged(calls), env=DistEnv(), lease_timeout_s=30)
    thread.join()
    assert calls == ["00000.tar"] and (summary["done"], summary["done_by_others"], summary["lost"]) == (1, 1, 0)
    assert completed(out)["00001.tar"]["worker"]["token"] == "othertok"


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


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_lease_whose_holder_died_is_taken_over(tmp_path, caplog):
    out = str(tmp_path)
    dead = Holder(socket.gethostname(), _dead_pid(), "deadbeef", rank=1)
    old = acquire(out, "00003.tar", dead)
    assert old is not None and old.held()
    me = this_process()
    new = acquire(out, "00003.tar", me)
    assert new is not None and new.held() and not old.held() and "took over from" in caplog.text
    assert read_lease(lease_path(out, "00003.tar"))[0]["pid"] == os.getpid()
    tmp = os.path.join(out, "00003.tar.tmp-of-the-dead")
    open(tmp, "w").write("half")
    assert commit_shard(out, "/in/00003.tar", tmp, "00003.tar", {}, {"input": 1}, old) is None  # dropped, no crash
    assert not os.path.exists(tmp) and new.held()


def test_a_live_holder_keeps_its_lease_until_its_heartbeat_is_older_than_the_timeout(tmp_path):
    out = str(tmp_path)
    alive = Holder(socket.gethostname(), os.getpid(), "alivetok")
    far = Holder("some-other-host", 12345, "faraway")
    assert acquire(out, "a.tar", alive) is not None and acquire(out, "b.tar", far) is not None
    assert acquire(out, "a.tar", this_process(), timeout_s=60) is None
    assert acquire(out, "b.tar", this_process(), timeout_s=60) is None  # another host: only the heartbeat tells
    beat = Heartbeat(0.05)
    stale = acquire(out, "c.tar", alive)
    beat.add("c.tar", stale)
    for name in ("b.tar", "c.tar"):
        os.utime(lease_path(out, name), (time.time() - 120, time.time() - 120))
    time.sleep(0.3)  # c.tar's holder beats again, b.tar's does not
    assert acquire(out, "c.tar", this_process(), timeout_s=60) is None
    assert acquire(out, "b.tar", this_process(), timeout_s=60) is not None
    beat.stop()
    assert not os.path.exists(lease_path(out, "c.tar"))  # stopping releases what was not committed


def test_temporary_names_differ_between_processes_of_the_same_rank(tmp_path):
    final = str(tmp_path / "00003.tar")
    env, task = DistEnv(rank=1, world_size=2), ArrayTask()
    old, new = Holder("node1", 4242, "aaaa", 1), Holder("node1", 4242, "bbbb", 1)
    assert tmp_output(final, env, task, old) != tmp_output(final, env, task, new)
    assert tmp_output(final, env, task, old).startswith(final + ".tmp-r1-t0-node1-4242-")


def test_committing_a_shard_that_another_process_committed_is_skipped(tmp_path):
    shards = _shards(tmp_path, 1)
    out = str(tmp_path / "out")
    os.makedirs(out)
    source = input_identity(shards[0])
    tmp_a, tmp_b = (tmp_output(os.path.join(out, "00000.tar"), DistEnv(), ArrayTask(), Holder("h", 1, t))
                    for t in ("aaaa", "bbbb"))
    _copy(shards[0], tmp_a)
    assert commit_shard(out, shards[0], tmp_a, "00000.tar", {"samples": 1}, source) is not None
    assert commit_shard(out, shards[0], tmp_b, "00000.tar", {"samples": 1}, source) is None  # its tmp is gone
    assert verify_committed(out, "00000.tar", source)["samples"] == 1
    assert verify_committed(out, "00000.tar", {"input": "another"}) is None
