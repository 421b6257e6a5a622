"""Backend ``hircnn``: the authors' hand-interaction Faster R-CNN (torchvision R50-FPN v2, 3 classes).

Classes: 0 background, 1 hand not in contact, 2 hand in contact. The authors release it as
``hircnn_r50fpnv2_849.pth`` holding ``{"model": state_dict}``; a plain state dict loads too.
"""

from __future__ import annotations

import argparse
import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import torch

from ..core.config import DetectorConfig, HircnnConfig
from ..runtime.weights import (
    WeightsFileError,
    is_bn_counter,
    load_strict,
    load_torch_file,
    unwrap_state_dict,
)
from .base import Box, Hand, HandDetector, HandState, box_iou
from .device import inference_autocast, resolve_device

NUM_CLASSES = 3
LABEL_TO_STATE: dict[int, HandState] = {1: "no_contact", 2: "contact"}
WEIGHTS_OPTION = "detector.hircnn.weights"
EXPECTED_LAYOUT = (
    "a torch file holding {'model': state_dict} (the authors' hircnn_r50fpnv2_849.pth) or a plain "
    "state_dict of torchvision fasterrcnn_resnet50_fpn_v2(num_classes=3)"
)
COCO_SKIPPED = "roi_heads.box_predictor."  # class-specific: stays randomly initialised


def build_hircnn_model(
    cfg: HircnnConfig, num_classes: int = NUM_CLASSES, **train_kwargs: Any
) -> torch.nn.Module:
    """The architecture, randomly initialised; nothing is downloaded.

    ``train_kwargs`` go to torchvision's ``FasterRCNN`` (e.g. ``box_batch_size_per_image``).
    """
    # deferred: torchvision at import
    from torchvision.models.detection import fasterrcnn_resnet50_fpn_v2

    return fasterrcnn_resnet50_fpn_v2(
        weights=None,
        weights_backbone=None,
        num_classes=num_classes,
        min_size=cfg.min_size,
        max_size=cfg.max_size,
        rpn_post_nms_top_n_test=cfg.rpn_post_nms_top_n_test,
        box_detections_per_img=cfg.box_detections_per_img,
        box_score_thresh=cfg.score_threshold,
        **train_kwargs,
    )


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict inside a weights file in either accepted layout, or a ``WeightsFileError``."""
    # torchvision's detection reference script (the authors' training) also saves its argparse
    # Namespace under "args": allow that one plain-data class, nothing else.
    hint = f"set {WEIGHTS_OPTION}=PATH to {EXPECTED_LAYOUT}"
    obj = load_torch_file(path, "hircnn weights", safe_globals=[argparse.Namespace], hint=hint)
    return unwrap_state_dict(obj, f"hircnn weights file {path}", ("model",), "module.", EXPECTED_LAYOUT)


def load_into(model: torch.nn.Module, state_dict: dict[str, torch.Tensor], source: str) -> None:
    """Strict load with a readable error naming missing/unexpected/mis-shaped keys (BatchNorm counters
    are optional: files saved from FrozenBatchNorm2d models lack them)."""
    load_strict(
        model,
        state_dict,
        source,
        f"fasterrcnn_resnet50_fpn_v2(num_classes={NUM_CLASSES})",
        hint=f"expected {EXPECTED_LAYOUT} (option {WEIGHTS_OPTION})",
    )


def load_coco_init(model: torch.nn.Module, path: str | Path) -> list[str]:
    """Initialise from torchvision's COCO fasterrcnn_resnet50_fpn_v2 weights, all but the box predictor.

    Returns the keys left at their random initialisation (the class-specific predictor layers).
    """
    sd = read_state_dict(path)
    own = model.state_dict()
    skipped = [k for k in own if k.startswith(COCO_SKIPPED)]
    usable = {k: v for k, v in sd.items() if k in own and not k.startswith(COCO_SKIPPED)}
    load_strict(
        model,
        usable,
        f"COCO weights {path}",
        "fasterrcnn_resnet50_fpn_v2",
        required=lambda k: not k.startswith(COCO_SKIPPED) and not is_bn_counter(k),
        hint="expected torchvision's fasterrcnn_resnet50_fpn_v2_coco file (option train.coco_weights)",
    )
    return skipped


def apply_state_rule(
    boxes: Sequence[Sequence[float]], scores: Sequence[float], labels: Sequence[int], iou: float
) -> list[int]:
    """Indices kept by the hand-state rule, by descending score.

    A contact box and a no-contact box overlapping with IoU > ``iou`` are the same hand seen in two
    states: only the higher-scoring one survives. Same-state overlaps were already removed by NMS.
    """
    order = sorted(range(len(scores)), key=lambda i: -float(scores[i]))
    kept: list[int] = []
    for i in order:
        if all(labels[j] == labels[i] or box_iou(boxes[i], boxes[j]) <= iou for j in kept):
            kept.append(i)
    return kept


def select_hands(
    boxes: Sequence[Sequence[float]], scores: Sequence[float], labels: Sequence[int], cfg: HircnnConfig
) -> list[Hand]:
    """The deployed post-processing: score threshold, hand-state rule, at most ``max_detections``."""
    cand = [i for i, s in enumerate(scores) if s >= cfg.score_threshold and labels[i] in LABEL_TO_STATE]
    kept = apply_state_rule(
        [boxes[i] for i in cand], [scores[i] for i in cand], [labels[i] for i in cand], cfg.state_iou
    )
    return [
        Hand(
            box=cast(Box, tuple(float(v) for v in boxes[cand[k]])),
            state=LABEL_TO_STATE[labels[cand[k]]],
            score=float(scores[cand[k]]),
        )
        for k in kept[: cfg.max_detections]
    ]


def file_digest(path: str | Path, length: int = 12) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:length]


DETECTOR_BACKEND = {
    "name": "hircnn",
    "help": "the authors' Faster R-CNN (hand state judged; needs detector.hircnn.weights)",
    "factory": "HircnnDetector",
    "detect_size": "torchvision",
}


class HircnnDetector(HandDetector):
    name = "hircnn"

    def __init__(self, cfg: DetectorConfig, model: torch.nn.Module | None = None) -> None:
        self.cfg = cfg
        self.hcfg = cfg.hircnn
        self.batch_size = cfg.batch_size
        self.device = resolve_device(cfg.device)
        if model is None:
            model = build_hircnn_model(self.hcfg)
            if self.hcfg.weights:
                load_into(model, read_state_dict(self.hcfg.weights), f"hircnn weights {self.hcfg.weights}")
                self.version = f"r50fpnv2-{file_digest(self.hcfg.weights)}"
            elif self.hcfg.allow_random_weights:
                self.version = "r50fpnv2-random"
            else:
                raise WeightsFileError(
                    f"the hircnn backend needs weights: set {WEIGHTS_OPTION}=PATH to {EXPECTED_LAYOUT} "
                    "(random weights only with detector.hircnn.allow_random_weights=true, for tests)"
                )
        else:
            self.version = "r50fpnv2-in-memory"
        self.model = model.to(self.device).eval()

    @torch.inference_mode()
    def _detect_batch(
        self, frames: list[torch.Tensor], *, video_id: str | None, frame_indices: list[int] | None
    ) -> list[list[Hand]]:
        images = [f.to(self.device, non_blocking=True).float().div_(255.0) for f in frames]
        with inference_autocast(self.device, self.cfg.amp):
            outputs = self.model(images)
        return [self._hands(o) for o in outputs]

    def _hands(self, output: dict[str, Any]) -> list[Hand]:
        return select_hands(
            output["boxes"].float().cpu().tolist(),
            output["scores"].float().cpu().tolist(),
            output["labels"].cpu().tolist(),
            self.hcfg,
        )
