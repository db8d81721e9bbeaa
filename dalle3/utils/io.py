"""Atomic file writes: a reader sees the old file or the whole new one, never a part.

Every writer here follows one pattern: write a temporary file beside the target whose
name is unique to this process (so two processes writing the same path never rename
each other's half-written file), then ``os.replace`` it into place. The temporary file
is removed if writing fails.
"""
from __future__ import annotations

import json
import os
import shutil
import threading
from contextlib import contextmanager
from typing import Any, Iterator, Union

PathLike = Union[str, "os.PathLike[str]"]


def tmp_path(path: PathLike) -> str:
    """A temporary name beside ``path``, unique to this process and thread."""
    return f"{os.fspath(path)}.tmp-{os.getpid()}-{threading.get_ident()}"


@contextmanager
def atomic_path(path: PathLike, makedirs: bool = True, replace: bool = True) -> Iterator[str]:
    """Yield a temporary path to write (a file, or a folder); on success it replaces ``path``.

    ``os.replace`` cannot replace a non-empty folder, so an existing folder at ``path`` is
    removed first: the new folder then appears in one rename.

    Args:
        replace: ``False``: first writer wins. If ``path`` exists when the temporary one is
            ready (another process got there first), the temporary one is dropped; the
            check and the rename are one system call, so two writers never both win.
    """
    path = os.fspath(path)
    if makedirs and os.path.dirname(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = tmp_path(path)
    try:
        yield tmp
        if not replace:
            _rename_unless_exists(tmp, path)
            return
        if os.path.isdir(tmp) and os.path.isdir(path):
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
        elif os.path.exists(tmp):
            os.remove(tmp)


def _rename_unless_exists(tmp: str, path: str) -> None:
    if os.path.isdir(tmp):
        try:
            os.rename(tmp, path)  # fails on an existing non-empty folder
        except OSError:
            if not os.path.exists(path):
                raise
        return
    try:
        os.link(tmp, path)  # fails if path exists; os.rename would overwrite a file
    except FileExistsError:
        pass


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    """Replace ``path`` with ``data``."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)


def atomic_write_text(path: PathLike, text: str) -> None:
    """Replace ``path`` with ``text`` (UTF-8)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: PathLike, data: Any, **dump_kwargs: Any) -> None:
    """Replace ``path`` with ``data`` as JSON (``dump_kwargs`` go to :func:`json.dumps`)."""
    atomic_write_text(path, json.dumps(data, **dump_kwargs))
