"""``open_video``: one reader for video files and frame folders, streaming sampled frames."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..core.config import VideoConfig
from ..core.storage import local_path
from .folder import folder_frames, probe_folder
from .records import DecodeStats, Frame, FrameBatch, VideoInfo
from .sampling import output_size
from .source import StreamSource, VideoInput, needs_stream

if TYPE_CHECKING:  # av at import
    from .probe import OpenedVideo


#: How a reader decodes one pass: (info, config, stats, the container the probe left open or None).
PassDecoder = Callable[[VideoInfo, VideoConfig, DecodeStats, "OpenedVideo | None"], Iterator[Frame]]


class VideoReader:
    """Iterate to stream :class:`Frame` objects; ``batches(n)`` groups them. Each pass decodes afresh.

    Nothing beyond the current frame (or batch) is held, so memory does not grow with video length.
    ``stats`` counts the packets read and frames decoded by the current pass.

    A reader from :func:`open_video` holds the container its probe opened until the first pass takes it
    (that pass carries on from the probe's first frame: one open per video); later passes reopen.
    :meth:`close` closes it when no pass will run (garbage collection does too).
    ``frame_source``: a pass from the stats alone (a reader that :meth:`with_max_side` cannot resize);
    ``decoder``: a pass from (info, config, stats, open container).
    """

    def __init__(
        self,
        info: VideoInfo,
        cfg: VideoConfig,
        frame_source: Callable[[DecodeStats], Iterator[Frame]] | None = None,
        *,
        decoder: PassDecoder | None = None,
        opened: OpenedVideo | None = None,
    ) -> None:
        self._opened = opened
        if (frame_source is None) == (decoder is None):
            raise ValueError("VideoReader needs one of frame_source or decoder")
        self.info = info
        self.config = cfg
        self._frame_source = frame_source
        self._decoder = decoder
        self.stats = DecodeStats()

    def __iter__(self) -> Iterator[Frame]:
        self.stats = DecodeStats()
        if self._decoder is None:
            assert self._frame_source is not None
            return self._frame_source(self.stats)
        return self._pass(self._decoder, self.stats)

    def _pass(self, decoder: PassDecoder, stats: DecodeStats) -> Iterator[Frame]:
        # The open container is taken when the pass starts: a pass never started leaves it to close().
        opened, self._opened = self._opened, None
        try:
            yield from decoder(self.info, self.config, stats, opened)
        finally:
            if opened is not None:
                opened.close()

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

    def with_max_side(self, max_side: int | None) -> VideoReader:
        """The same video read at another decode size (``max_side`` as in
        :class:`~maskahand.core.config.VideoConfig`), without probing it again.

        The new reader takes over the container this one holds (if no pass has started), so its first
        pass still opens nothing; this reader's own passes then reopen the video.
        """
        if self._decoder is None:
            raise ValueError(f"{self.info.path}: a reader built from a frame_source cannot change its size")
        cfg = dataclasses.replace(self.config, max_side=max_side)
        cfg.validate()
        frame_width, frame_height = output_size(self.info.width, self.info.height, max_side)
        info = dataclasses.replace(self.info, frame_width=frame_width, frame_height=frame_height)
        opened, self._opened = self._opened, None
        return VideoReader(info, cfg, decoder=self._decoder, opened=opened)

    def close(self) -> None:
        """Close the container the probe left open, if no pass has taken it (passes close their own)."""
        opened, self._opened = self._opened, None
        if opened is not None:
            opened.close()

    def __del__(self) -> None:
        self.close()

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
        return _pyav_reader(source, cfg)
    if isinstance(path, VideoInput):
        path = path.url
    path = local_path(path)
    if path.is_dir():
        info, files = probe_folder(path, cfg)
        return VideoReader(
            info, cfg, decoder=lambda info, cfg, stats, _: folder_frames(files, info, cfg, stats)
        )
    if cfg.backend == "decord":
        # deferred: av, numpy at import
        from .decord_backend import decord_frames
        from .probe import probe_file

        info = probe_file(path, cfg)
        file = path
        return VideoReader(
            info, cfg, decoder=lambda info, cfg, stats, _: decord_frames(file, info, cfg, stats)
        )
    return _pyav_reader(path, cfg)


def _pyav_reader(path: Path | StreamSource, cfg: VideoConfig) -> VideoReader:
    """PyAV by path, or over a file object (decord needs a path: streamed videos always use PyAV).

    The probe's open container (demuxed up to the first frame) goes to the reader's first pass.
    """
    # deferred: av, numpy at import
    from .probe import probe_for_decoding
    from .pyav_backend import pyav_frames

    info, opened = probe_for_decoding(path, cfg)

    def decode(
        info: VideoInfo, cfg: VideoConfig, stats: DecodeStats, opened: OpenedVideo | None
    ) -> Iterator[Frame]:
        return pyav_frames(path, info, cfg, stats, opened=opened)

    return VideoReader(info, cfg, decoder=decode, opened=opened)
