"""Filesystem helpers shared by every stage: atomic writes and append-only JSON-lines ledgers."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _default_file_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


# mkstemp creates 0600 files; outputs should get the permissions a plain open() would give them.
FILE_MODE = _default_file_mode()


def atomic_write_bytes(path: str | Path, data: bytes | bytearray | memoryview) -> None:
    """Write ``data`` to ``path`` so that readers see either the old file or the whole new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


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
