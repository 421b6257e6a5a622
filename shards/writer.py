"""Shard writer: validated samples -> byte-stable WebDataset tars with manifests.

Each shard is written to ``NAME.tar.partial`` and renamed to ``NAME.tar`` once complete, then its
manifest ``NAME.tar.json`` (count, keys, sha256, bytes, schema) is written atomically; the manifest is
the completion marker a resuming stage should look for. A killed writer leaves at most a
``.partial`` file, which no reader (``*.tar`` globs, :func:`maskahand.shards.reader.list_shards`)
consumes. Tar headers carry fixed names, mtime 0, uid/gid 0 and mode 0644, and the encoders are
deterministic: the same samples in the same order give byte-identical shards.
"""

from __future__ import annotations

import builtins
import hashlib
import io
import logging
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from ..core.config import ShardWriterConfig
from ..core.fsutil import atomic_write_json, fsync_dir
from .codec import encode_sample
from .schema import (
    SCHEMAS,
    ClipSample,
    MaskAHandSample,
    Sample,
    SampleKind,
    SchemaError,
    check_key,
)
from .schema import validate_sample as _validate

log = logging.getLogger(__name__)

PARTIAL_SUFFIX = ".partial"
MANIFEST_SUFFIX = ".json"
_BLOCK = tarfile.BLOCKSIZE


@dataclass(frozen=True)
class ShardInfo:
    """A finished shard and what its manifest says."""

    path: Path
    count: int
    keys: list[str]
    sha256: str
    bytes: int
    schema: str

    @property
    def manifest_path(self) -> Path:
        return manifest_path(self.path)

    def manifest(self) -> dict[str, Any]:
        return {
            "shard": self.path.name,
            "count": self.count,
            "keys": self.keys,
            "sha256": self.sha256,
            "bytes": self.bytes,
            "schema": self.schema,
        }


def manifest_path(tar_path: str | Path) -> Path:
    tar_path = Path(tar_path)
    return tar_path.with_name(tar_path.name + MANIFEST_SUFFIX)


def shard_name(prefix: str, index: int) -> str:
    return f"{prefix}-{index:06d}.tar"


def final_size(member_bytes: int) -> int:
    """File size of a tar holding ``member_bytes`` of members once closed (end blocks, record padding)."""
    return -(-(member_bytes + 2 * _BLOCK) // tarfile.RECORDSIZE) * tarfile.RECORDSIZE


def member_size(data_len: int) -> int:
    """Bytes one tar member takes (header block + data padded to 512)."""
    return _BLOCK + -(-data_len // _BLOCK) * _BLOCK


class _HashingFile:
    """Write-only file wrapper that hashes and counts what passes through it."""

    def __init__(self, f: BinaryIO):
        self.f, self.sha = f, hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        self.size += len(data)
        return self.f.write(data)

    def tell(self) -> int:
        return self.size


class TarShard:
    """One shard being written: raw members in, a finished ``.tar`` + manifest out.

    Lower level than :class:`ShardWriter` (no validation, no encoding): tests and tools use it to
    build shards with arbitrary members.
    """

    def __init__(self, path: str | Path, schema: str):
        self.path = Path(path)
        if self.path.suffix != ".tar":
            raise ValueError(f"shard name must end in .tar: {self.path}")
        self.schema = schema
        self.partial = self.path.with_name(self.path.name + PARTIAL_SUFFIX)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.partial, "wb")  # noqa: SIM115 (closed in finish() / abort())
        self._hashing = _HashingFile(self._file)
        self._tar = tarfile.TarFile(fileobj=self._hashing, mode="w", format=tarfile.GNU_FORMAT)  # type: ignore[arg-type]
        self.keys: list[str] = []

    @property
    def bytes(self) -> int:
        return self._hashing.size

    def add(self, key: str, members: list[tuple[str, builtins.bytes]]) -> None:  # `bytes` is the property
        for suffix, data in members:
            info = tarfile.TarInfo(f"{key}.{suffix}")
            info.size = len(data)
            info.mtime = 0
            info.mode = 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            self._tar.addfile(info, io.BytesIO(data))
        self.keys.append(key)

    def finish(self) -> ShardInfo:
        self._tar.close()
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        # A rewritten shard must never pair with the manifest of its previous version.
        manifest_path(self.path).unlink(missing_ok=True)
        os.replace(self.partial, self.path)
        fsync_dir(self.path.parent)
        info = ShardInfo(
            self.path, len(self.keys), list(self.keys), self._hashing.sha.hexdigest(), self.bytes, self.schema
        )
        atomic_write_json(info.manifest_path, info.manifest())
        return info

    def abort(self) -> None:
        """Drop the shard being written (nothing readable is left)."""
        try:
            self._tar.close()
        finally:
            self._file.close()
            self.partial.unlink(missing_ok=True)


class ShardWriter:
    """Write samples of one kind into rolling shards ``{prefix}-{index:06d}.tar`` under ``out_dir``.

    A shard is closed once it holds ``cfg.max_samples`` samples, before a sample that would make the
    finished file larger than ``cfg.max_bytes`` (a single larger sample still gets a shard of its own), or on
    :meth:`flush` (e.g. at a video boundary). ``start_index`` sets the first shard index;
    :meth:`set_next_name` the exact name of the next shard (resumable stages need deterministic
    names). ``finished`` lists the shards completed so far.
    """

    def __init__(
        self,
        out_dir: str | Path,
        prefix: str,
        cfg: ShardWriterConfig | None = None,
        kind: SampleKind = "clip",
        start_index: int = 0,
        validate: bool = True,
    ):
        if kind not in SCHEMAS:
            raise ValueError(f"kind must be one of {list(SCHEMAS)}, got {kind!r}")
        if not prefix or "/" in prefix or "." in prefix:
            raise ValueError(f"prefix {prefix!r} must be non-empty, without '/' or '.'")
        self.cfg = cfg or ShardWriterConfig()
        self.cfg.validate()
        self.out_dir = Path(out_dir)
        self.prefix, self.kind, self.schema = prefix, kind, SCHEMAS[kind]
        self.next_index = start_index
        self.validate = validate
        self.finished: list[ShardInfo] = []
        self._next_name: str | None = None
        self._shard: TarShard | None = None
        self._sample_type = ClipSample if kind == "clip" else MaskAHandSample

    def set_next_name(self, name: str) -> None:
        """Give the next shard this exact file name (``*.tar``); closes the current shard first."""
        if not name.endswith(".tar") or "/" in name:
            raise ValueError(f"shard name must be a plain file name ending in .tar, got {name!r}")
        self.flush()
        self._next_name = name

    @property
    def current_path(self) -> Path | None:
        return self._shard.path if self._shard else None

    def write(self, sample: Sample) -> None:
        if not isinstance(sample, self._sample_type):
            raise SchemaError(
                f"a {self.kind} writer got a {type(sample).__name__}", key=getattr(sample, "key", None)
            )
        if self.validate:
            _validate(sample)
        else:
            check_key(sample.key)
        if sample.meta.get("schema") != self.schema:
            raise SchemaError(f"meta.schema must be {self.schema!r}", key=sample.key)
        members = encode_sample(sample, self.cfg.jpeg_quality, self.cfg.target_format)
        size = sum(member_size(len(data)) for _, data in members)
        if (
            self._shard is not None
            and self._shard.keys
            and final_size(self._shard.bytes + size) > self.cfg.max_bytes
        ):
            self.flush()
        if self._shard is None:
            self._open()
        assert self._shard is not None
        if sample.key in self._shard.keys:
            raise SchemaError("duplicate key in the same shard", key=sample.key, shard=self._shard.path.name)
        self._shard.add(sample.key, members)
        if len(self._shard.keys) >= self.cfg.max_samples:
            self.flush()

    def _open(self) -> None:
        if self._next_name is not None:
            name, self._next_name = self._next_name, None
        else:
            name = shard_name(self.prefix, self.next_index)
            self.next_index += 1
        self._shard = TarShard(self.out_dir / name, self.schema)

    def flush(self) -> ShardInfo | None:
        """Finish the current shard now (no-op when it is empty or none is open)."""
        shard, self._shard = self._shard, None
        if shard is None:
            return None
        if not shard.keys:
            shard.abort()
            return None
        info = shard.finish()
        self.finished.append(info)
        log.debug("finished %s (%d samples, %d bytes)", info.path, info.count, info.bytes)
        return info

    def close(self) -> list[ShardInfo]:
        self.flush()
        return self.finished

    def abort(self) -> None:
        """Drop the unfinished shard (finished ones stay)."""
        shard, self._shard = self._shard, None
        if shard is not None:
            shard.abort()

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        # On an exception the shard in progress may hold a half-written sample: drop it.
        if exc_type is None:
            self.close()
        else:
            self.abort()
