"""``build_detector``: the backend a ``DetectorConfig`` names (each backend's heavy imports load here).

Backends are found by :data:`maskahand.core.plugins.DETECTOR_BACKENDS`: a module of this package (or an entry
point's) declaring ``DETECTOR_BACKEND = {"name": ..., "help": ..., "factory": ...}``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..core.plugins import DETECTOR_BACKENDS, UnknownPluginError
from .base import DetectorError, HandDetector

if TYPE_CHECKING:
    from ..core.config import DetectorConfig


def build_detector(cfg: DetectorConfig) -> HandDetector:
    """The backend named by ``cfg.backend``, ready to ``detect``."""
    cfg.validate()
    try:
        factory = DETECTOR_BACKENDS.load(cfg.backend)
    except UnknownPluginError:
        names = ", ".join(DETECTOR_BACKENDS.names())
        raise ValueError(f"unknown detector backend {cfg.backend!r} ({names})") from None
    detector = factory(cfg)
    if not isinstance(detector, HandDetector):
        raise DetectorError(
            f"detector backend {cfg.backend!r}: its factory returned {type(detector).__name__}"
        )
    return detector
