"""IntCAM: interaction hotspot maps through the anticipation module (seed 001 eq. 4).

For an inactive image's backbone features x (2048 channels) and a verb a, the map is
``H_a = sum_k ReLU(d y_a / d x_k * x_k)``, where y_a is the verb's score after anticipating x's active
state and one LSTM step. The hallucinated clip has one time step, so "averaged over time" is that step.
At 224 x 224 each map is 28 x 28 (the backbone's stride 8).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .model import HotspotsModel


def intcam(model: HotspotsModel, images: torch.Tensor, verbs: Sequence[int] | None = None) -> torch.Tensor:
    """(B,3,H,W) images -> (B, len(verbs), H/8, W/8) non-negative hotspot maps (all verbs by default).

    The model is put in eval mode for the call (the anticipation's BatchNorm uses its running
    statistics, so each image's maps are independent of the rest of the batch) and restored after.
    """
    verbs = list(range(model.cfg.num_verbs)) if verbs is None else [int(v) for v in verbs]
    if not verbs:
        raise ValueError("intcam needs at least one verb")
    bad = [v for v in verbs if not 0 <= v < model.cfg.num_verbs]
    if bad:
        raise ValueError(f"verbs {bad} out of range 0..{model.cfg.num_verbs - 1}")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            feats = model.features(images)
        feats.requires_grad_(True)
        with torch.enable_grad():
            logits = model.hotspot_logits(feats)  # (B, verbs)
            maps = []
            for i, v in enumerate(verbs):
                # samples do not interact in eval mode: the gradient of the summed score is per sample
                (grad,) = torch.autograd.grad(logits[:, v].sum(), feats, retain_graph=i < len(verbs) - 1)
                maps.append(torch.relu(grad * feats.detach()).sum(1))
    finally:
        model.train(was_training)
    return torch.stack(maps, 1)
