"""Typed errors for video input: callers catch :class:`VideoError` per video."""

from __future__ import annotations

from pathlib import Path

from ..core.cli_util import UnusableInputError


class VideoError(Exception):
    """A video (file or frame folder) cannot be read; ``path`` names it and ``reason`` says why."""

    kind = "unreadable video"

    def __init__(self, path: str | Path, reason: str) -> None:
        # a URL or ``TAR#MEMBER`` stays a string (Path would fold ``s3://`` into ``s3:/``)
        self.path: Path | str = path if isinstance(path, str) and "://" in path else Path(path)
        self.reason = reason
        super().__init__(f"{self.path}: {self.kind}: {reason}")

    def __reduce__(self):  # keep path and reason when pickled across processes (Ray)
        return (type(self), (self.path, self.reason))


class VideoNotFoundError(VideoError, UnusableInputError):
    kind = "not found"


class EmptyVideoError(VideoError):
    kind = "empty"


class NotAVideoError(VideoError):
    kind = "not a video"


class NoVideoStreamError(VideoError):
    kind = "no video stream"


class TruncatedVideoError(VideoError):
    kind = "truncated"


class NoDecodableFramesError(VideoError):
    kind = "no decodable frames"


class UnreadableFrameError(VideoError):
    """One image of a frame folder cannot be decoded (``path`` is the image file)."""

    kind = "unreadable frame image"
