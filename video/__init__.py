"""Video input every stage uses: files (PyAV, guarded decord) and EPIC frame folders, sampled at an fps.

Names are imported on first use, so ``maskahand.video.cli`` (and ``maskahand --help``) stays free of
torch and PyAV at import.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__all__ = [
    "DecodeStats",
    "EmptyVideoError",
    "Frame",
    "FrameBatch",
    "NoDecodableFramesError",
    "NoVideoStreamError",
    "NotAVideoError",
    "TruncatedVideoError",
    "UnreadableFrameError",
    "VIDEO_EXTENSIONS",
    "VideoError",
    "VideoInfo",
    "VideoNotFoundError",
    "VideoReader",
    "discover_videos",
    "open_video",
]

if TYPE_CHECKING:  # the exports, as type checkers see them; loaded on first use (maskahand.core.lazy)
    from .discover import VIDEO_EXTENSIONS, discover_videos
    from .errors import (
        EmptyVideoError,
        NoDecodableFramesError,
        NotAVideoError,
        NoVideoStreamError,
        TruncatedVideoError,
        UnreadableFrameError,
        VideoError,
        VideoNotFoundError,
    )
    from .reader import VideoReader, open_video
    from .records import DecodeStats, Frame, FrameBatch, VideoInfo
else:
    from ..core.lazy import lazy_exports

    __getattr__, __dir__ = lazy_exports(__name__, __file__, __all__)
