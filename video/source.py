"""Videos that are not plain local files: objects behind a URL, and members of a tar (video WebDataset).

PyAV decodes from a Python file object, so such a video is streamed: :class:`StreamSource` opens the
object once (an fsspec file reading in blocks, never a whole copy on disk) and hands the decoder a
:class:`RangeFile` view of it, limited to a tar member's bytes when the video is one.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from typing import IO, Any

from ..core import storage

#: fsspec read-ahead block for video objects: large enough that a decoder's small reads rarely wait on a
#: request, small enough that memory per open video stays modest (s3fs' default is 50 MiB).
VIDEO_BLOCK_SIZE = 8 * 1024 * 1024


@dataclass(frozen=True)
class VideoInput:
    """Where a video's bytes are: a local path or URL, or a byte range (a tar member) of one.

    ``meta_offset``/``meta_size`` locate the member's ``KEY.json`` in the same tar (size 0: none).
    """

    url: str
    offset: int = 0
    size: int = -1  # -1: to the end of the file (a whole file)
    member: str = ""
    meta_offset: int = 0
    meta_size: int = 0

    @property
    def name(self) -> str:
        """How messages and records name it: the URL, or ``TAR#MEMBER``."""
        return f"{storage.redact(self.url)}#{self.member}" if self.member else storage.redact(self.url)


def needs_stream(source: VideoInput | str | os.PathLike[str]) -> bool:
    """True when a video must be read through a file object (a URL or a tar member), not by path."""
    if isinstance(source, VideoInput):
        return bool(source.member) or storage.is_url(source.url)
    return storage.is_url(str(source))


class RangeFile(io.RawIOBase):
    """A read-only, seekable view of ``length`` bytes from ``offset`` of a shared, seekable file.

    Several views may share one file: each keeps its own position and seeks the file before reading.
    """

    def __init__(self, raw: IO[bytes], offset: int, length: int, name: str = "") -> None:
        super().__init__()
        self._raw, self._offset, self._length, self._pos = raw, offset, length, 0
        self._name = name

    def _read_raw(self, n: int) -> bytes:
        self._raw.seek(self._offset + self._pos)
        try:
            return self._raw.read(n)
        except Exception as e:  # a failed range request: typed, naming the object
            raise storage.classify_error(e, self._name) from e

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, pos: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._length}[whence]
        self._pos = max(0, base + pos)
        return self._pos

    def readinto(self, buffer: Any) -> int:
        n = min(len(buffer), self._length - self._pos)
        if n <= 0:
            return 0
        data = self._read_raw(n)
        buffer[: len(data)] = data
        self._pos += len(data)
        return len(data)

    def read(self, size: int = -1) -> bytes:
        n = self._length - self._pos if size is None or size < 0 else min(size, self._length - self._pos)
        if n <= 0:
            return b""
        data = self._read_raw(n)
        self._pos += len(data)
        return data

    @property
    def size(self) -> int:
        return self._length


class StreamSource:
    """A video read through a file object: opened on first use, shared by every pass over it.

    ``size`` and ``fingerprint`` come from the same open (no extra request); storage failures are
    raised typed (:class:`~maskahand.core.storage.ObjectNotFoundError`, ...), naming the URL.
    """

    def __init__(self, source: VideoInput | str, known: dict[str, Any] | None = None) -> None:
        self.input = source if isinstance(source, VideoInput) else VideoInput(str(source))
        self._known = known  # the object's version from a listing: opened without asking again
        self._raw: IO[bytes] | None = None
        self._file_info: dict[str, Any] = {}

    def __str__(self) -> str:
        return self.input.name

    def _ensure(self) -> IO[bytes]:
        if self._raw is None:
            self._raw, self._file_info = storage.open_with_info(
                self.input.url, block_size=VIDEO_BLOCK_SIZE, known=None if self.input.member else self._known
            )
        return self._raw

    @property
    def file_size(self) -> int:
        """Bytes of the whole file or object (a tar, for a member)."""
        self._ensure()
        return int(self._file_info["size"])

    @property
    def size(self) -> int:
        """Bytes of the video itself."""
        return self.input.size if self.input.size >= 0 else self.file_size - self.input.offset

    def open(self) -> RangeFile:
        """A fresh view of the video's bytes, positioned at its start."""
        raw = self._ensure()
        return RangeFile(raw, self.input.offset, self.size, self.input.name)

    def read_meta(self) -> bytes:
        """The member's ``KEY.json`` bytes (b"" when it has none)."""
        if self.input.meta_size <= 0:
            return b""
        raw = self._ensure()
        raw.seek(self.input.meta_offset)
        try:
            return raw.read(self.input.meta_size)
        except Exception as e:  # a failed range request: typed, naming the member
            raise storage.classify_error(e, self.input.name) from e

    def prefetch(self) -> None:
        """Open the object and read the block where the video starts (from its ``KEY.json`` when that
        comes first in the tar) into the file's read-ahead cache: the decoder's first reads then wait on
        no request. Raises what the first open or read would (typed storage errors)."""
        raw = self._ensure()
        first = self.input.offset
        if self.input.meta_size > 0:
            first = min(first, self.input.meta_offset)
        # one byte asked: the file's read-ahead fetches its whole block (VIDEO_BLOCK_SIZE) from there
        RangeFile(raw, first, 1, self.input.name).read(1)

    def fingerprint(self) -> dict[str, Any]:
        """What identifies this version of the input: size and ETag (or mtime), plus the member's range."""
        self._ensure()
        fp = dict(self._file_info)
        if self.input.member:
            fp.update(offset=self.input.offset, member_size=self.size)
        return fp

    def close(self) -> None:
        if self._raw is not None:
            self._raw.close()
            self._raw = None
