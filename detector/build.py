"""``build_detector``: the backend a ``DetectorConfig`` names (each backend's heavy imports load here)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from maskahand.detector.base import HandDetector

if TYPE_CHECKING:
    from maskahand.config import DetectorConfig


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
