"""Filesystem helpers shared by every stage: atomic writes and append-only JSON-lines ledgers.

One of each: :func:`atomic_path` (a temporary name beside the target, renamed over it when the writer
is done: for writers that take a file name), :func:`atomic_write_bytes` / ``_text`` / ``_json`` on top of
it, and :func:`fsync_dir`. The torch writer built on :func:`atomic_path` is
``maskahand.runtime.atomic.save_torch_atomic`` (``core`` imports no torch).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

# Errors that mean "this filesystem cannot fsync (or open) a directory" rather than "the data is not safe".
_NO_DIR_SYNC = {errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EACCES}


def fsync_dir(path: str | Path) -> None:
    """Make the renames and creations inside ``path`` durable (fsync of the folder itself).

    Why this error behaviour: callers fsync a folder right before they record work as finished (a ledger
    line, a manifest), so a real failure must surface: a folder that is gone (``FileNotFoundError``) or
    ``EIO`` (the disk lost what was written) raises. A filesystem that cannot sync a folder at all
    (procfs, some FUSE/network mounts: ``EINVAL``/``ENOTSUP``; a folder that cannot be opened for reading,
    as on Windows: ``EACCES``) has nothing more to give after the rename, so that is skipped quietly:
    raising there would make every write fail on such a mount.
    """
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as e:
        if e.errno in _NO_DIR_SYNC:
            return
        raise
    try:
        os.fsync(fd)
    except OSError as e:
        if e.errno not in _NO_DIR_SYNC:
            raise
    finally:
        os.close(fd)


def _default_file_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


# mkstemp creates 0600 files; outputs should get the permissions a plain open() would give them.
FILE_MODE = _default_file_mode()


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str = ".tmp") -> Iterator[Path]:
    """A temporary file name beside ``path`` for a writer that takes a name (numpy, PyAV, torch.save).

    When the ``with`` block ends normally the file gets a plain ``open()``'s permissions (mkstemp makes
    0600), is fsynced and renamed over ``path``, and the folder is fsynced: readers see the old file or
    the whole new one. When the block raises, the temporary file is removed and ``path`` is untouched.
    ``suffix`` ends the temporary name, for libraries that pick the format by it (``".mp4"``); the
    temporary name starts with a dot, so ``*.ext`` globs never see it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, FILE_MODE)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write_bytes(path: str | Path, data: bytes | bytearray | memoryview) -> None:
    """Write ``data`` to ``path`` so that readers see either the old file or the whole new one."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def append_jsonl(path: str | Path, record: dict[str, Any]) -> None:
    """Append one record as a single line and fsync it: a crash loses at most a torn last line."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(record, sort_keys=True) + "\n"
    with open(path, "a", encoding="utf-8") as f:
        f.write(line)
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path: str | Path) -> Iterator[dict[str, Any]]:
    """Records of a JSON-lines file, streamed; a torn final line (from a crash) is skipped."""
    path = Path(path)
    if not path.exists():
        return
    with open(path, "rb") as f:
        yield from jsonl_records(f, str(path))


def jsonl_records(lines: Iterable[bytes | str], where: str) -> Iterator[dict[str, Any]]:
    """Records of JSON lines, streamed: a torn last line (an interrupted append) is skipped, a bad line
    elsewhere raises ``ValueError`` naming ``where`` and the line."""
    bad: int | None = None
    for i, line in enumerate(lines):
        if bad is not None:
            raise ValueError(f"{where}: line {bad + 1} is not valid JSON")
        line = line.strip()
        if not line:
            continue
        try:
            yield json.loads(line)
        except json.JSONDecodeError:
            bad = i  # fine only if it is the last line
