"""Training loss (seed 002, equation 11): heatmap KL(g || softmax(h)) per channel + action cross-entropy."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class LossTerms:
    total: torch.Tensor
    heatmap: torch.Tensor
    action: torch.Tensor | None


def heatmap_kl(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """KL(g / sum(g) || softmax(h)) over the pixels of each (sample, channel).

    logits, target: (B, K, H, W). Returns the per-(B, K) divergence and a (B, K) mask of channels whose
    target has mass (an all-zero target carries no distribution and is left out).
    """
    if logits.shape != target.shape:
        raise ValueError(f"heatmap logits {tuple(logits.shape)} and targets {tuple(target.shape)} differ")
    log_q = F.log_softmax(logits.float().flatten(2), dim=-1)
    g = target.float().flatten(2).clamp_min(0)
    mass = g.sum(-1, keepdim=True)
    p = g / mass.clamp_min(torch.finfo(g.dtype).tiny)
    # 1[g > 0] p log(p / q): xlogy gives 0 where p == 0
    kl = (torch.xlogy(p, p) - p * log_q).sum(-1)
    return kl, mass.squeeze(-1) > 0


def afformer_loss(
    heatmap_logits: torch.Tensor,
    action_logits: torch.Tensor | None,
    heatmaps: torch.Tensor,
    actions: torch.Tensor | None = None,
) -> LossTerms:
    """Mean heatmap KL over (sample, channel) pairs with a target, + cross-entropy on actions.

    heatmaps: (B, K, H, W) with K equal to the model's heatmap channels, or (B, 1, H, W) with
    ``actions`` (B,) naming the channel each target belongs to (OPRA: one heatmap per (image, action)).
    """
    if heatmaps.dim() != 4:
        raise ValueError(f"heatmap targets must be (B, K, H, W), got {tuple(heatmaps.shape)}")
    if heatmaps.shape[1] != heatmap_logits.shape[1]:
        if heatmaps.shape[1] != 1 or actions is None:
            raise ValueError(
                f"targets have {heatmaps.shape[1]} heatmap channels, the model predicts "
                f"{heatmap_logits.shape[1]}; pass one target per sample with its action index"
            )
        index = actions.long().view(-1, 1, 1, 1).expand(-1, 1, *heatmap_logits.shape[-2:])
        heatmap_logits = heatmap_logits.gather(1, index)
    kl, valid = heatmap_kl(heatmap_logits, heatmaps)
    heatmap_term = (kl * valid).sum() / valid.sum().clamp_min(1)
    action_term = None
    total = heatmap_term
    if action_logits is not None and actions is not None:
        action_term = F.cross_entropy(action_logits.float(), actions.long())
        total = total + action_term
    return LossTerms(total=total, heatmap=heatmap_term, action=action_term)
