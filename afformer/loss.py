"""Training loss (seed 002, equation 11; the authors' ``Afformer.forward``): heatmap KL + action BCE.

Heatmap term: KL(g / sum(g) || softmax(h)) over the pixels of every (sample, action) pair that has a
target, averaged over those pairs (the authors' ``kl_div(..., reduction="batchmean")`` on the selected
heatmaps).

Action term (multi-label, as the authors: an OPRA entry can carry several actions): binary
cross-entropy with logits on a multi-hot target, averaged over batch x classes. Inference turns the
action logits into independent sigmoid probabilities (:func:`action_probabilities`); top-k ranking of
those probabilities is what evaluation reads.

``actions`` passed to :func:`afformer_loss` is either
- a multi-hot (B, num_actions) tensor (bool, int or float 0/1): sample b carries every action a with
  ``actions[b, a] = 1``; the heatmap term then uses the channels of those actions (that have mass), or
- a (B,) integer tensor: one action index per sample (the same as its one-hot row).
"""

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


def multi_hot(actions: torch.Tensor, num_actions: int) -> torch.Tensor:
    """(B, num_actions) float 0/1 target from a (B,) index tensor or a (B, num_actions) multi-hot one."""
    if actions.dim() == 1:
        if actions.is_floating_point():
            raise ValueError("a 1-D actions tensor must hold integer action indices")
        index = actions.long()
        if len(index) and (int(index.min()) < 0 or int(index.max()) >= num_actions):
            raise ValueError(f"action indices must lie in 0..{num_actions - 1}, got {index.tolist()}")
        return F.one_hot(index, num_actions).float()
    if actions.dim() != 2 or actions.shape[1] != num_actions:
        raise ValueError(
            f"actions must be (B,) indices or a (B, {num_actions}) multi-hot tensor, got {tuple(actions.shape)}"
        )
    target = actions.float()
    if not bool(((target == 0) | (target == 1)).all()):
        raise ValueError("a multi-hot actions tensor must hold only 0 and 1")
    return target


def action_bce(action_logits: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """The authors' action loss: BCE with logits against the multi-hot target, mean over B x classes."""
    target = multi_hot(actions.to(action_logits.device), action_logits.shape[1])
    return F.binary_cross_entropy_with_logits(action_logits.float(), target)


def action_probabilities(action_logits: torch.Tensor) -> torch.Tensor:
    """Independent per-action probabilities (sigmoid), as the authors' inference returns them."""
    return action_logits.float().sigmoid()


def afformer_loss(
    heatmap_logits: torch.Tensor,
    action_logits: torch.Tensor | None,
    heatmaps: torch.Tensor,
    actions: torch.Tensor | None = None,
) -> LossTerms:
    """Mean heatmap KL over the (sample, channel) pairs with a target, + BCE on the actions.

    heatmaps: (B, K, H, W) with K equal to the model's heatmap channels (with multi-hot ``actions``,
    only the channels of each sample's actions count), or (B, 1, H, W) with one action per sample
    (``actions`` (B,) indices, or multi-hot rows with exactly one 1) naming the channel of each target.
    """
    if heatmaps.dim() != 4:
        raise ValueError(f"heatmap targets must be (B, K, H, W), got {tuple(heatmaps.shape)}")
    channels = heatmap_logits.shape[1]
    if actions is not None and actions.shape[0] != heatmaps.shape[0]:
        raise ValueError(f"actions has {actions.shape[0]} rows for a batch of {heatmaps.shape[0]}")
    num_actions = action_logits.shape[1] if action_logits is not None else channels
    hot = multi_hot(actions, num_actions) if actions is not None else None
    pick = None
    if heatmaps.shape[1] != channels:
        if heatmaps.shape[1] != 1 or hot is None:
            raise ValueError(
                f"targets have {heatmaps.shape[1]} heatmap channels, the model predicts "
                f"{channels}; pass one target per sample with its action index"
            )
        if not bool((hot.sum(1) == 1).all()):
            raise ValueError("one (B, 1, H, W) heatmap per sample needs exactly one action per sample")
        index = hot.argmax(1).to(heatmap_logits.device).view(-1, 1, 1, 1)
        heatmap_logits = heatmap_logits.gather(1, index.expand(-1, 1, *heatmap_logits.shape[-2:]))
    elif hot is not None and hot.shape[1] == channels:
        pick = hot.to(heatmap_logits.device) > 0
    kl, valid = heatmap_kl(heatmap_logits, heatmaps)
    if pick is not None:
        valid = valid & pick
    heatmap_term = (kl * valid).sum() / valid.sum().clamp_min(1)
    action_term = None
    total = heatmap_term
    if action_logits is not None and actions is not None:
        action_term = action_bce(action_logits, actions)
        total = total + action_term
    return LossTerms(total=total, heatmap=heatmap_term, action=action_term)
