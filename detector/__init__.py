"""maskahand.detector: hand-interaction detectors behind one interface.

```python
from maskahand.detector import build_detector, Hand
det = build_detector(DetectorConfig(backend="mediapipe"))
hands_per_frame = det.detect(frames, video_id=None, frame_indices=None)
```
Backends: ``hircnn`` (the authors' Faster R-CNN), ``mediapipe`` (offline default, state unknown),
``precomputed`` (EPIC-KITCHENS-100 pickles or our JSON lines). Importing this package is light;
torch and mediapipe load when a detector is built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from maskahand.detector.base import (
    HAND_STATES,
    DetectionsFileError,
    DetectorError,
    Hand,
    HandDetector,
    WeightsError,
)

if TYPE_CHECKING:
    from maskahand.config import DetectorConfig

__all__ = [
    "HAND_STATES",
    "DetectionsFileError",
    "DetectorError",
    "Hand",
    "HandDetector",
    "WeightsError",
    "build_detector",
]


def build_detector(cfg: DetectorConfig) -> HandDetector:
    """The backend named by ``cfg.backend``, ready to ``detect``."""
    cfg.validate()
    if cfg.backend == "hircnn":
        from maskahand.detector.hircnn import HircnnDetector

        return HircnnDetector(cfg)
    if cfg.backend == "mediapipe":
        from maskahand.detector.mediapipe_hands import MediapipeDetector

        return MediapipeDetector(cfg)
    if cfg.backend == "precomputed":
        from maskahand.detector.precomputed import PrecomputedDetector

        return PrecomputedDetector(cfg)
    raise ValueError(f"unknown detector backend {cfg.backend!r} (hircnn, mediapipe, precomputed)")
