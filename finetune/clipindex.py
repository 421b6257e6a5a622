"""The fine-tuning epoch as the authors count it: one sample per clip, not per entry.

Their ``OPRA.__len__`` is ``video_clips.num_clips()``: every entry's video is cut into clips (2 fps, 32
frames, stride 16, a shorter remainder clip) and each clip is one sample of the epoch, so an entry with a
long video is seen more often. Counting clips needs each video's frame times, not its pixels: for a file
the presentation times of its packets (demux only, as torchvision's ``VideoClips`` reads pts), for a frame
folder the numbers in its file names, and an AssistQ frame list is one clip. The evaluation's clip rule
(``evaluation.clips.clip_windows``, ``eval.max_clips``) then gives the count.
"""

from __future__ import annotations

import logging
from fractions import Fraction
from pathlib import Path

from ..core import storage
from ..core.config import EvalConfig, VideoConfig
from ..evaluation.benchmark import Benchmark, Entry
from ..evaluation.clips import clip_span, clip_windows
from ..video.folder import frame_files
from ..video.sampling import FpsSampler
from ..video.source import StreamSource

log = logging.getLogger(__name__)


def sampled_count(times: list[float], fps: float, source_fps: float | None) -> int:
    """Frames the reader's fps rule keeps among frames at ``times`` (seconds, any order)."""
    if not times:
        return 0
    ordered = sorted(times)
    sampler = FpsSampler(fps, source_fps)
    return sum(sampler.accept(t - ordered[0]) for t in ordered)


def file_frame_times(path: Path | str) -> tuple[list[float], float | None]:
    """Presentation times of a video file's (or URL's) playable packets, and its frame rate; no decoding
    (an object is streamed: only the blocks the demuxer reads are fetched)."""
    # deferred: av at import
    from ..video.probe import open_container

    source = StreamSource(path) if isinstance(path, str) and storage.is_url(path) else Path(path)
    try:
        return _packet_times(open_container(source))
    finally:
        if isinstance(source, StreamSource):
            source.close()


def _packet_times(container) -> tuple[list[float], float | None]:
    with container:
        stream = container.streams.video[0]
        base = stream.time_base or Fraction(1, 1)
        times = [
            float(p.pts * base)
            for p in container.demux(stream)
            if p.size > 0 and not p.is_discard and p.pts is not None
        ]
        rate = float(stream.average_rate) if stream.average_rate else None
    return times, rate


def folder_frame_times(
    folder: Path | str, frame_range: tuple[int, int] | None, video: VideoConfig
) -> list[float]:
    """Times of a frame folder's images (file-name number / ``video.folder_fps``), within ``frame_range``."""

    files = frame_files(folder)
    first, last = frame_range if frame_range is not None else (None, None)
    numbers = [n for n, _ in files if frame_range is None or first <= n <= last]  # type: ignore[operator]
    return [n / video.folder_fps for n in numbers]


def entry_clip_count(bench: Benchmark, entry: Entry, cfg: EvalConfig, video: VideoConfig) -> int:
    """How many clips ``load_clips`` cuts for ``entry`` (at least 1: a video that cannot be read still
    gets one sample, which then reports the error when it is loaded)."""
    if "frames" in entry.extra:  # AssistQ: the entry's frame list is its one clip
        return 1
    path = bench.resolve(entry.video)
    try:
        # a URL prefix is a frame folder when the entry has a frame range (EPIC), else a video object
        if path.is_dir() if isinstance(path, Path) else clip_span(entry.extra) is not None:
            n = sampled_count(folder_frame_times(path, clip_span(entry.extra), video), cfg.clip_fps, None)
        else:
            times, rate = file_frame_times(path)
            n = sampled_count(times, cfg.clip_fps, rate)
    except Exception as e:  # noqa: BLE001 - any unreadable input: the sample reports it when loaded
        log.warning("%s: cannot count the clips of %s (%s); counted as one", bench.annotations, path, e)
        return 1
    count = len(clip_windows(n, cfg.clip_length, cfg.clip_stride))
    if cfg.max_clips is not None:
        count = min(count, cfg.max_clips)
    return max(count, 1)


def clip_index(bench: Benchmark, cfg: EvalConfig, video: VideoConfig) -> list[tuple[int, int]]:
    """``(entry position, clip number)`` for every clip of every entry: the samples of one epoch."""
    counts: dict[tuple[str, tuple[int, int] | None], int] = {}
    pairs = []
    for pos, entry in enumerate(bench.entries):
        key = (str(entry.video), clip_span(entry.extra) if "frames" not in entry.extra else (-1, pos))
        if key not in counts:
            counts[key] = entry_clip_count(bench, entry, cfg, video)
        pairs += [(pos, k) for k in range(counts[key])]
    return pairs
