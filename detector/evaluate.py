"""VOC-style average precision for hands (all-point interpolation, as VOC2010+ and 100DOH report).

Two numbers, as the 100DOH benchmark reports them:
- ``hand``: class-agnostic AP@0.5 of hand boxes;
- ``hand_state``: AP@0.5 where a detection is a true positive only if its box matches a hand
  (IoU >= threshold with the best-overlapping, not yet matched ground truth) *and* its predicted
  state (label) equals that hand's state. This is the paper's "hand + interaction" figure (84.9).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torchvision.ops import box_iou


@dataclass
class ImageGroundTruth:
    boxes: torch.Tensor  # (N, 4)
    labels: torch.Tensor  # (N,)
    difficult: torch.Tensor | None = None  # (N,) bool


@dataclass
class ImagePrediction:
    boxes: torch.Tensor  # (M, 4)
    scores: torch.Tensor  # (M,)
    labels: torch.Tensor  # (M,)


def voc_ap(recall: torch.Tensor, precision: torch.Tensor) -> float:
    """Area under the precision envelope (all-point interpolation)."""
    mrec = torch.cat([torch.zeros(1), recall.double(), torch.ones(1)])
    mpre = torch.cat([torch.zeros(1), precision.double(), torch.zeros(1)])
    mpre = torch.flip(torch.cummax(torch.flip(mpre, [0]), 0).values, [0])
    changed = torch.nonzero(mrec[1:] != mrec[:-1]).flatten()
    return float(((mrec[changed + 1] - mrec[changed]) * mpre[changed + 1]).sum())


def average_precision(
    gts: Sequence[ImageGroundTruth],
    preds: Sequence[ImagePrediction],
    iou_threshold: float = 0.5,
    match_state: bool = False,
) -> float:
    """AP over a set of images; ``match_state`` also requires the predicted label to equal the GT's."""
    if len(gts) != len(preds):
        raise ValueError(f"{len(gts)} ground truths but {len(preds)} predictions")
    difficult = [
        g.difficult if g.difficult is not None else torch.zeros(len(g.boxes), dtype=torch.bool) for g in gts
    ]
    num_positives = int(sum(int((~d).sum()) for d in difficult))
    if num_positives == 0:
        raise ValueError("no (non-difficult) ground-truth hands: AP is undefined")
    records = [(float(s), i, j) for i, p in enumerate(preds) for j, s in enumerate(p.scores.tolist())]
    records.sort(key=lambda r: -r[0])
    ious = [
        box_iou(p.boxes.float(), g.boxes.float()) if len(p.boxes) and len(g.boxes) else None
        for p, g in zip(preds, gts)
    ]
    matched = [torch.zeros(len(g.boxes), dtype=torch.bool) for g in gts]
    tp = torch.zeros(len(records))
    fp = torch.zeros(len(records))
    for k, (_, i, j) in enumerate(records):
        overlaps = ious[i]
        if overlaps is None:
            fp[k] = 1
            continue
        best_iou, g = overlaps[j].max(0)
        g = int(g)
        if float(best_iou) < iou_threshold:
            fp[k] = 1
        elif difficult[i][g]:
            continue  # neither TP nor FP, as in VOC
        elif matched[i][g] or match_state and int(preds[i].labels[j]) != int(gts[i].labels[g]):
            fp[k] = 1
        else:
            matched[i][g] = True
            tp[k] = 1
    tp, fp = torch.cumsum(tp, 0), torch.cumsum(fp, 0)
    recall = tp / num_positives
    precision = tp / torch.clamp(tp + fp, min=1e-12)
    return voc_ap(recall, precision)


def hand_metrics(
    gts: Sequence[ImageGroundTruth], preds: Sequence[ImagePrediction], iou_threshold: float = 0.5
) -> dict[str, float]:
    return {
        "ap_hand": average_precision(gts, preds, iou_threshold, match_state=False),
        "ap_hand_state": average_precision(gts, preds, iou_threshold, match_state=True),
    }
