"""Interaction Hotspots (Nagarajan et al., ICCV 2019): the weakly supervised model, trained and scored by our tools.

    from maskahand.hotspots import load_checkpoint
    from maskahand.hotspots.intcam import intcam
    model = load_checkpoint("ckpt_E_20.pth", num_verbs=7)      # the authors' {"net": ...} file, or ours
    maps = intcam(model, images)                               # (B, 7, 28, 28) at 224 x 224

Modules, one job each: ``backbone`` (frozen dilated ResNet-50, ImageNet weights from a file), ``model``
(L2 pooling, LSTM, classifier, anticipation, losses), ``intcam`` (hotspot maps), ``checkpoint`` (their
names <-> ours), ``data`` (training pairs on the evaluation readers), ``task`` (the trainer recipe),
``predictor`` (``maskahand eval --model hotspots``). Names load on first use, so ``cli`` stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__all__ = [
    "DilatedResNet50",
    "HotspotsModel",
    "HotspotsOutput",
    "build_model",
    "load_checkpoint",
    "load_imagenet_weights",
    "to_reference_state_dict",
]

if TYPE_CHECKING:  # the exports, as type checkers see them; loaded on first use (maskahand.core.lazy)
    from .backbone import DilatedResNet50, load_imagenet_weights
    from .checkpoint import load_checkpoint, to_reference_state_dict
    from .model import HotspotsModel, HotspotsOutput, build_model
else:
    from ..core.lazy import lazy_exports

    __getattr__, __dir__ = lazy_exports(__name__, __file__, __all__)
