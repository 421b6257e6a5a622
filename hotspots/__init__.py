"""Interaction Hotspots (Nagarajan et al., ICCV 2019): the weakly supervised model, trained and scored by our tools.

    from maskahand.hotspots import build_model, intcam, load_checkpoint
    model = load_checkpoint("ckpt_E_20.pth", num_verbs=7)      # the authors' {"net": ...} file, or ours
    maps = intcam(model, images)                               # (B, 7, 28, 28) at 224 x 224

Modules, one job each: ``backbone`` (frozen dilated ResNet-50, ImageNet weights from a file), ``model``
(L2 pooling, LSTM, classifier, anticipation, losses), ``intcam`` (hotspot maps), ``checkpoint`` (their
names <-> ours), ``data`` (training pairs on the evaluation readers), ``task`` (the trainer recipe),
``predictor`` (``maskahand eval --model hotspots``). Names load on first use, so ``cli`` stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "DilatedResNet50": "backbone",
    "WeightsFileError": "backbone",
    "load_imagenet_weights": "backbone",
    "HotspotsModel": "model",
    "HotspotsOutput": "model",
    "build_model": "model",
    "intcam": "intcam",
    "CheckpointMismatchError": "checkpoint",
    "load_checkpoint": "checkpoint",
    "to_reference_state_dict": "checkpoint",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"maskahand.hotspots.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'maskahand.hotspots' has no attribute {name!r}")
