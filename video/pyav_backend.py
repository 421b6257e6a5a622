"""Stream sampled frames of a video file with PyAV (the default backend)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import torch
from av.video.reformatter import VideoReformatter

from ..core.config import VideoConfig
from .errors import NoDecodableFramesError, TruncatedVideoError
from .probe import Openable, OpenedVideo, error_name, open_container, open_for_decoding
from .records import DecodeStats, Frame, VideoInfo
from .sampling import FpsSampler

logger = logging.getLogger("maskahand.video")

_converters = threading.local()


def _converter() -> VideoReformatter:
    """This thread's RGB converter, kept across frames and videos.

    ``frame.to_ndarray(width=...)`` builds a new swscale context (and its threads) for every frame; one
    kept converter builds it once. swscale re-configures itself from each frame's size, format and
    colour properties, so its output is the same as a fresh context's (tested against to_ndarray).
    """
    converter = getattr(_converters, "reformatter", None)
    if converter is None:
        converter = _converters.reformatter = VideoReformatter()
    return converter


def pyav_frames(
    path: Openable,
    info: VideoInfo,
    cfg: VideoConfig,
    stats: DecodeStats,
    skip_through: int = -1,
    opened: OpenedVideo | None = None,
) -> Iterator[Frame]:
    """Decode ``path`` sequentially and yield the frames the fps rule keeps.

    Only kept frames are converted to RGB (and resized, antialiased, by swscale's area filter), so the
    cost of a skipped frame is its decode. ``skip_through``: do not yield frames with an index up to
    this one (a fallback resuming after another backend). ``opened``: the container the probe left
    open (:func:`~maskahand.video.probe.probe_for_decoding`), carried on from instead of a new open;
    this pass closes it.
    """
    stats.backend_used = "pyav"
    sampler = FpsSampler(cfg.fps, info.fps)
    if opened is None:
        opened = open_for_decoding(path, cfg)
    with opened.container:
        stats.packets_read += opened.packets_read
        stats.decode_errors += opened.decode_errors
        last_error = opened.last_error
        pending, opened.decoded = opened.decoded, []
        packets = opened.packets
        index = -1
        first_time: float | None = None
        turns = info.rotation // 90
        # swscale resizes the stored frame; the quarter turns of the display matrix come after
        size = (info.frame_height, info.frame_width) if turns % 2 else (info.frame_width, info.frame_height)
        reformatter = _converter()
        while True:
            if pending:  # the probe's first frame(s)
                decoded, pending = pending, []
            else:
                try:
                    packet = next(packets)
                except StopIteration:
                    break
                except av.FFmpegError as e:
                    raise TruncatedVideoError(
                        error_name(path),
                        f"demuxing stopped after {stats.packets_read} packets ({e.strerror or e})",
                    ) from e
                stats.packets_read += packet.size > 0  # the last, empty packet only flushes the decoder
                try:
                    decoded = packet.decode()
                except av.FFmpegError as e:
                    stats.decode_errors += 1
                    last_error = e
                    continue
            for frame in decoded:
                index += 1
                stats.frames_decoded += 1
                time = frame.time if frame.time is not None else index / (info.fps or 1.0)
                if first_time is None:
                    first_time = time
                pts = time - first_time
                if not sampler.accept(pts) or index <= skip_through:
                    continue
                rgb = reformatter.reformat(
                    frame, width=size[0], height=size[1], format="rgb24", interpolation="AREA"
                ).to_ndarray()
                if turns:
                    rgb = np.rot90(rgb, turns)
                stats.frames_returned += 1
                image = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).contiguous()
                yield Frame(image=image, index=index, pts=pts)
    if stats.frames_decoded == 0:
        detail = f"; last decoder error: {last_error.strerror or last_error}" if last_error else ""
        raise NoDecodableFramesError(
            error_name(path), f"0 frames decoded from {stats.packets_read} packets{detail}"
        )
    if stats.decode_errors:
        logger.warning(
            "%s: %d of %d packets failed to decode and were skipped (last error: %s)",
            path,
            stats.decode_errors,
            stats.packets_read,
            last_error,
        )


def count_playable_packets(path: Path) -> int:
    """Video packets the container will play (an edit list marks hidden ones as discarded), no decode."""
    with open_container(path) as container:
        stream = container.streams.video[0]
        return sum(1 for p in container.demux(stream) if p.size > 0 and not p.is_discard)
