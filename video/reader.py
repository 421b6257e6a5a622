"""``open_video``: one reader for video files and frame folders, streaming sampled frames."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from ..core.config import VideoConfig
from ..core.storage import local_path
from .folder import folder_frames, probe_folder
from .records import DecodeStats, Frame, FrameBatch, VideoInfo
from .source import StreamSource, VideoInput, needs_stream


class VideoReader:
    """Iterate to stream :class:`Frame` objects; ``batches(n)`` groups them. Each pass decodes afresh.

    Nothing beyond the current frame (or batch) is held, so memory does not grow with video length.
    ``stats`` counts the packets read and frames decoded by the current pass.
    """

    def __init__(
        self,
        info: VideoInfo,
        cfg: VideoConfig,
        frame_source: Callable[[DecodeStats], Iterator[Frame]],
    ) -> None:
        self.info = info
        self.config = cfg
        self._frame_source = frame_source
        self.stats = DecodeStats()

    def __iter__(self) -> Iterator[Frame]:
        self.stats = DecodeStats()
        return self._frame_source(self.stats)

    def batches(self, size: int) -> Iterator[FrameBatch]:
        if size < 1:
            raise ValueError("batch size must be >= 1")
        pending: list[Frame] = []
        for frame in self:
            pending.append(frame)
            if len(pending) == size:
                yield _stack(pending)
                pending = []
        if pending:
            yield _stack(pending)

    def __repr__(self) -> str:
        return f"VideoReader({self.info})"


def _stack(frames: list[Frame]) -> FrameBatch:
    return FrameBatch(
        frames=torch.stack([f.image for f in frames]),
        indices=[f.index for f in frames],
        pts=[f.pts for f in frames],
    )


def open_video(path: str | Path | VideoInput | StreamSource, cfg: VideoConfig | None = None) -> VideoReader:
    """Validate a video file, EPIC frame folder, URL or tar member and return a streaming reader.

    A URL (``s3://``, ``gs://``, ``http(s)://``) or a :class:`~maskahand.video.source.VideoInput` tar
    member is streamed into PyAV through a file object (never copied whole to disk); pass the same
    :class:`~maskahand.video.source.StreamSource` again to reopen it without a new request.
    Raises a :class:`~maskahand.video.errors.VideoError` subclass naming ``path`` when it cannot be read,
    or a :class:`~maskahand.core.storage.StorageError` when the object cannot be fetched.
    """
    cfg = cfg or VideoConfig()
    cfg.validate()
    if isinstance(path, StreamSource) or needs_stream(path):
        source = path if isinstance(path, StreamSource) else StreamSource(path)  # type: ignore[arg-type]
        return _stream_reader(source, cfg)
    if isinstance(path, VideoInput):
        path = path.url
    path = local_path(path)
    if path.is_dir():
        info, files = probe_folder(path, cfg)
        return VideoReader(info, cfg, lambda stats: folder_frames(files, info, cfg, stats))

    # deferred: av at import
    from .probe import probe_file

    info = probe_file(path, cfg)
    if cfg.backend == "decord":
        # deferred: av, numpy at import
        from .decord_backend import decord_frames

        return VideoReader(info, cfg, lambda stats: decord_frames(path, info, cfg, stats))
    # deferred: av, numpy at import
    from .pyav_backend import pyav_frames

    return VideoReader(info, cfg, lambda stats: pyav_frames(path, info, cfg, stats))


def _stream_reader(source: StreamSource, cfg: VideoConfig) -> VideoReader:
    """PyAV over a file object (decord needs a path: streamed videos always use PyAV)."""
    # deferred: av, numpy at import
    from .probe import probe_file
    from .pyav_backend import pyav_frames

    info = probe_file(source, cfg)
    return VideoReader(info, cfg, lambda stats: pyav_frames(source, info, cfg, stats))
