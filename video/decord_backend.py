"""decord as an opt-in backend, guarded: anything suspicious hands the video over to PyAV.

decord 0.6 (bundled FFmpeg 4.1) mis-reads MP4 edit lists: on a VP9 file that hides its first 5 s it
reports every stored frame (213 instead of 63 playable), with negative timestamps, and then either
raises "Error sending packet" from its threaded decoder or returns copies of the last frame. Its
failures are Python exceptions (``DECORDError``/``RuntimeError``), not process aborts, and the files it
is given have already passed PyAV's validation, so the guard runs in-process:

1. before decoding: decord's frame count equals the playable packets PyAV's demuxer counts (a read of
   the packets, no decode); its timestamps start at 0 and increase;
2. while decoding: any exception, or frames of another size than the displayed one (rotation applied);
3. at the end: a run of bit-identical frames at the tail (decord repeats the last good frame).

On a failure the remaining frames come from PyAV (frames already yielded are not repeated) and a
warning names the video and the reason.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core.config import VideoConfig
from .pyav_backend import count_playable_packets, pyav_frames
from .records import DecodeStats, Frame, VideoInfo
from .sampling import FpsSampler, resize_uint8

logger = logging.getLogger("maskahand.video")

READ_CHUNK = 8  # frames per decord get_batch call (bounds memory)
DUPLICATE_TAIL = 3  # this many trailing copies of one frame mark decord's duplicated tail
MAX_HELD = 32  # longest run of identical frames held back while checking for a duplicated tail


class DecordRejected(Exception):
    """decord's view of a video disagrees with the container; the reason is the message."""


def import_decord() -> Any:
    """``import decord``, after binding OpenCV's and torchvision's PNG codecs to their own zlib.

    decord's wheel carries its own zlib and exports its symbols process-wide. A libpng whose zlib calls are
    still unbound when decord loads binds them to decord's copy at first use, and from then on every PNG
    decode in the process fails ("libpng error: bad parameters to zlib"): 16-bit heatmaps, PNG targets.
    One tiny encode and decode through each codec first binds them for good.
    """
    # deferred: cv2, torchvision at import
    import cv2
    import torchvision.io as tio

    ok, buf = cv2.imencode(".png", np.zeros((2, 2), np.uint16))
    cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    tio.decode_png(tio.encode_png(torch.zeros((1, 2, 2), dtype=torch.uint8)))
    # deferred: decord at import
    import decord

    return decord


def decord_frames(path: Path, info: VideoInfo, cfg: VideoConfig, stats: DecodeStats) -> Iterator[Frame]:
    last_index = -1
    try:
        for frame in _without_duplicated_tail(_decord_frames(path, info, cfg, stats)):
            last_index = frame.index
            yield frame
        return
    except DecordRejected as e:
        reason = str(e)
    except Exception as e:  # decord raises DECORDError, RuntimeError, ...: all mean "do not trust it"
        reason = f"decord raised {type(e).__name__}: {str(e).strip().splitlines()[-1][-200:]}"
    logger.warning("%s: decord backend rejected (%s); falling back to PyAV", path, reason)
    yield from pyav_frames(path, info, cfg, stats, skip_through=last_index)


def _decord_frames(path: Path, info: VideoInfo, cfg: VideoConfig, stats: DecodeStats) -> Iterator[Frame]:
    decord = import_decord()

    stats.backend_used = "decord"
    playable = count_playable_packets(path)
    reader = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=cfg.threads)
    count = len(reader)
    if count != playable:
        raise DecordRejected(f"decord sees {count} frames, the container plays {playable}")
    starts = reader.get_frame_timestamp(np.arange(count))[:, 0].astype(np.float64)
    if starts[0] < -1e-3:
        raise DecordRejected(f"negative timestamps (first frame at {starts[0]:.3f} s: an edit list)")
    if count > 1 and not np.all(np.diff(starts) > 0):
        raise DecordRejected("timestamps do not increase")
    pts = starts - starts[0]
    sampler = FpsSampler(cfg.fps, info.fps)
    chosen = [i for i in range(count) if sampler.accept(float(pts[i]))]
    for begin in range(0, len(chosen), READ_CHUNK):
        indices = chosen[begin : begin + READ_CHUNK]
        rgb = torch.from_numpy(reader.get_batch(indices).asnumpy()).permute(0, 3, 1, 2)
        if rgb.shape[-2:] != (info.height, info.width):
            shown = f"{rgb.shape[-1]}x{rgb.shape[-2]}"
            raise DecordRejected(f"decord frames are {shown}, the video displays {info.width}x{info.height}")
        rgb = resize_uint8(rgb, info.frame_width, info.frame_height)
        stats.frames_decoded = indices[-1] + 1
        for image, index in zip(rgb, indices):
            stats.frames_returned += 1
            yield Frame(image=image.contiguous(), index=index, pts=float(pts[index]))


def _without_duplicated_tail(frames: Iterator[Frame]) -> Iterator[Frame]:
    """Pass frames through, holding back runs of exact copies until a different frame shows they are real."""
    previous: Frame | None = None
    held: list[Frame] = []
    for frame in frames:
        if previous is not None and torch.equal(frame.image, previous.image):
            held.append(frame)
            if len(held) > MAX_HELD:  # a long static scene: real content
                yield from held
                held = []
            continue
        yield from held
        held = []
        yield frame
        previous = frame
    if len(held) >= DUPLICATE_TAIL and previous is not None:
        raise DecordRejected(f"the last {len(held)} frames are copies of frame {previous.index}")
    yield from held
