"""Shard leases: at most one live process works on an offline job's shard at a time.

Splitting by rank (:func:`dalle3.data.shards.assign_shards`) gives every shard one owner
*per launch*; it cannot stop a second launch (a requeue, a rerun started while the
orphaned ranks of a killed ``torchrun`` still work, two copies of the job) from doing
the same shard at the same time. A lease does:

* ``<out_dir>/_manifest/_leases/<output name>.lease`` is created with ``O_CREAT | O_EXCL``, so
  of two processes exactly one gets it. It holds the holder's host, pid, the pid's
  start tick (so a reused pid is not mistaken for the holder), rank, array task, a
  random per-process token and the start time, as JSON.
* The heartbeat is the lease file's mtime, refreshed by :class:`Heartbeat` through the
  holder's open descriptor. Refreshing through the descriptor never touches a lease
  that somebody else has created meanwhile (that is another file).
* A lease whose holder is gone -- its heartbeat is older than the timeout, or it names a
  dead pid on this host -- is taken over: the taker renames the stale file away (one
  rename wins) and creates a new one with ``O_EXCL`` again. A holder checks
  :meth:`Lease.held` (is the file at the path still the one it created?) before it
  commits, so a holder that was taken over throws its work away instead of committing.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import socket
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Optional

from dalle3.utils.logging import get_logger

log = get_logger(__name__)
LEASE_DIR = os.path.join("_manifest", "_leases")
"Beside the manifest entries (:data:`dalle3.data.offline.MANIFEST_DIR`), so an output folder holds no new top-level name."
LEASE_SUFFIX = ".lease"
DEFAULT_TIMEOUT_S = 300.0
"Heartbeat age after which a lease's holder is presumed gone (the offline jobs' default)."


def proc_start(pid: int) -> Optional[str]:
    """The start tick of process ``pid`` (field 22 of ``/proc/<pid>/stat``), or ``None`` where unknown."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


@dataclass(frozen=True)
class Holder:
    """Who works on a shard: the process that writes and commits it."""

    host: str
    pid: int
    token: str
    "Random per process: tells a new process from an old one of the same host, pid and rank."
    rank: int = 0
    task_id: int = 0
    started: float = field(default_factory=time.time)
    proc_start: Optional[str] = None

    def record(self) -> dict:
        return asdict(self)

    def tag(self) -> str:
        """File-name-safe ``<host>-<pid>-<token>``, for temporary names unique to this process."""
        return f"{re.sub(r'[^A-Za-z0-9.]+', '_', self.host)}-{self.pid}-{self.token}"


_TOKENS: dict[int, str] = {}


def this_process(rank: int = 0, task_id: int = 0) -> Holder:
    """This process as a lease holder (one token per process, kept across calls)."""
    pid = os.getpid()
    token = _TOKENS.setdefault(pid, secrets.token_hex(4))
    return Holder(socket.gethostname(), pid, token, int(rank), int(task_id), proc_start=proc_start(pid))


def holder_gone(record: dict, heartbeat: float, timeout_s: float, now: Optional[float] = None) -> bool:
    """Whether a lease's holder is gone: heartbeat older than ``timeout_s``, or a dead (or reused) pid on this host."""
    if (time.time() if now is None else now) - heartbeat > timeout_s:
        return True
    if record.get("host") != socket.gethostname() or not isinstance(record.get("pid"), int):
        return False  # another host (or a lease still being written): only the heartbeat can tell
    try:
        os.kill(record["pid"], 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # alive, another user's
    started = proc_start(record["pid"])
    return bool(record.get("proc_start") and started and started != record["proc_start"])


def lease_path(out_dir: str, name: str) -> str:
    return os.path.join(out_dir, LEASE_DIR, name + LEASE_SUFFIX)


def read_lease(path: str) -> Optional[tuple[dict, float, int]]:
    """``(record, heartbeat, inode)`` of the lease at ``path``; ``None`` when there is none."""
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            data = f.read()
    except FileNotFoundError:
        return None
    try:
        record = json.loads(data)
    except ValueError:
        record = {}  # being written right now (or cut off): its age decides
    return (record if isinstance(record, dict) else {}), st.st_mtime, st.st_ino


class Lease:
    """A lease this process created (or adopted); ``fd`` keeps its file open for the heartbeat."""

    def __init__(self, path: str, holder: Holder, fd: Optional[int]):
        self.path, self.holder, self.fd = path, holder, fd

    def held(self) -> bool:
        """Whether the file at the path is still this lease (nobody has taken it over)."""
        if self.fd is None:
            return False
        try:
            return os.stat(self.path).st_ino == os.fstat(self.fd).st_ino
        except FileNotFoundError:
            return False

    def beat(self) -> None:
        if self.fd is not None:
            os.utime(self.fd)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def release(self) -> None:
        """Remove the lease if it is still this one, and close it."""
        if self.held():
            try:
                os.remove(self.path)
            except FileNotFoundError:
                pass
        self.close()

    @classmethod
    def adopt(cls, path: str, holder: Holder) -> "Lease":
        """The lease at ``path`` that another process of ``holder`` (a DataLoader worker) created for it;
        a lease that does not hold (``held()`` false) when the file is gone or names another holder."""
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            return cls(path, holder, None)
        with os.fdopen(os.dup(fd), "rb") as f:
            data = f.read()
        try:
            mine = json.loads(data).get("token") == holder.token
        except (ValueError, AttributeError):
            mine = False
        if not mine:
            os.close(fd)
            fd = None
        return cls(path, holder, fd)


def _create(path: str, holder: Holder) -> Optional[Lease]:
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o644)
    except FileExistsError:
        return None
    os.write(fd, json.dumps(holder.record()).encode("utf-8"))
    return Lease(path, holder, fd)


def _break(path: str, record: dict, inode: int, holder: Holder) -> bool:
    """Move the stale lease (``record``, ``inode``) away; ``False`` when another process moved or renewed it first."""
    aside = f"{path}.stale-{holder.tag()}-{secrets.token_hex(2)}"
    try:
        os.rename(path, aside)  # of several takers, one rename finds the file
    except FileNotFoundError:
        return False
    moved = read_lease(aside)
    if moved is not None and (moved[2] != inode or moved[0].get("token") != record.get("token")):
        try:  # it was a fresh lease created after our look: put it back
            os.link(aside, path)
        except OSError:
            pass
        os.remove(aside)
        return False
    os.remove(aside)
    return True


def acquire(out_dir: str, name: str, holder: Holder, timeout_s: float = DEFAULT_TIMEOUT_S) -> Optional[Lease]:
    """The lease of output ``name`` for ``holder``, taking over one whose holder is gone; ``None`` when it is held."""
    path = lease_path(out_dir, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    for _ in range(16):  # each round either wins, finds a live holder, or lost a race to another taker
        lease = _create(path, holder)
        if lease is not None:
            return lease
        found = read_lease(path)
        if found is None:
            continue
        record, heartbeat, inode = found
        if not holder_gone(record, heartbeat, timeout_s):
            return None
        if _break(path, record, inode, holder):
            age = time.time() - heartbeat
            log.warning("lease of %s: took over from %s pid %s (rank %s): %s", name, record.get("host"),
                        record.get("pid"), record.get("rank"),
                        f"no heartbeat for {age:.0f} s" if age > timeout_s else "that process is gone")
    return None


def is_free(out_dir: str, name: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> bool:
    """Whether nobody live holds output ``name``'s lease (none, or its holder is gone)."""
    found = read_lease(lease_path(out_dir, name))
    return found is None or holder_gone(found[0], found[1], timeout_s)


class Heartbeat:
    """A daemon thread that refreshes every lease it is given, every ``interval_s``.

    A thread, not a call in the work loop: one captioner batch may take longer than the
    timeout on a slow CPU, and the heartbeat must not depend on it.
    """

    def __init__(self, interval_s: float):
        self.interval_s = interval_s
        self.leases: dict[str, Lease] = {}
        self.lock = threading.Lock()
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, name="lease-heartbeat", daemon=True)
        self.thread.start()

    def add(self, name: str, lease: Lease) -> None:
        with self.lock:
            self.leases[name] = lease

    def pop(self, name: str) -> Optional[Lease]:
        """Stop refreshing ``name``'s lease (once this returns, no refresh of it is under way); return it."""
        with self.lock:
            return self.leases.pop(name, None)

    def release(self, name: str) -> None:
        """Stop refreshing ``name``'s lease and release it (under the lock: a closed descriptor's number
        may be reused at once, and must never be refreshed)."""
        with self.lock:
            lease = self.leases.pop(name, None)
            if lease is not None:
                lease.release()

    def _run(self) -> None:
        while not self.stop_event.wait(self.interval_s):
            with self.lock:
                for lease in self.leases.values():
                    try:
                        lease.beat()
                    except OSError:
                        pass

    def stop(self) -> None:
        """Stop the thread and release every lease still held (their work was not committed)."""
        self.stop_event.set()
        self.thread.join(timeout=5)
        with self.lock:
            for lease in self.leases.values():
                lease.release()
            self.leases = {}
