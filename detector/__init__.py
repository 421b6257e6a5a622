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

__all__ = [
    "HAND_STATES",
    "DetectionsFileError",
    "DetectorError",
    "Hand",
    "HandDetector",
    "build_detector",
]

if TYPE_CHECKING:  # the exports, as type checkers see them; loaded on first use (maskahand.core.lazy)
    from .base import (
        HAND_STATES,
        DetectionsFileError,
        DetectorError,
        Hand,
        HandDetector,
    )
    from .build import build_detector
else:
    from ..core.lazy import lazy_exports

    __getattr__, __dir__ = lazy_exports(__name__, __file__, __all__)
