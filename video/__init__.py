"""Video input every stage uses: files (PyAV, guarded decord) and EPIC frame folders, sampled at an fps.

Names are imported on first use, so ``maskahand.video.cli`` (and ``maskahand --help``) stays free of
torch and PyAV at import.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "VIDEO_EXTENSIONS": "discover",
    "discover_videos": "discover",
    "VideoError": "errors",
    "VideoNotFoundError": "errors",
    "EmptyVideoError": "errors",
    "NotAVideoError": "errors",
    "NoVideoStreamError": "errors",
    "TruncatedVideoError": "errors",
    "NoDecodableFramesError": "errors",
    "UnreadableFrameError": "errors",
    "VideoReader": "reader",
    "open_video": "reader",
    "DecodeStats": "records",
    "Frame": "records",
    "FrameBatch": "records",
    "VideoInfo": "records",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'maskahand.video' has no attribute '{name}'")
    value = getattr(importlib.import_module(f"maskahand.video.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
