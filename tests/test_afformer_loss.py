"""Heatmap KL (seed 002 equation 11) and the action term."""

from __future__ import annotations

import math

import pytest
import torch

from maskahand.afformer.loss import afformer_loss, heatmap_kl


def test_kl_matches_hand_computation():
    # g = [1, 3, 0, 0] -> p = [1/4, 3/4, 0, 0]; h = 0 -> q = 1/4 everywhere
    target = torch.tensor([1.0, 3.0, 0.0, 0.0]).view(1, 1, 2, 2)
    kl, valid = heatmap_kl(torch.zeros(1, 1, 2, 2), target)
    expected = 0.25 * math.log(0.25 / 0.25) + 0.75 * math.log(0.75 / 0.25)
    assert valid.tolist() == [[True]]
    assert kl.item() == pytest.approx(expected, rel=1e-6)


def test_loss_zero_when_prediction_equals_target_positive_otherwise():
    torch.manual_seed(0)
    target = torch.rand(2, 3, 16, 16) + 0.01
    logits = target.log() + 5.0  # softmax(log g + c) = g / sum(g)
    assert afformer_loss(logits, None, target).total.item() == pytest.approx(0.0, abs=1e-5)
    other = afformer_loss(torch.randn(2, 3, 16, 16), None, target).total
    assert other.item() > 0.01
    # a target with zeros: 1[g > 0] keeps the divergence finite and zero at the match
    sparse = torch.zeros(1, 1, 8, 8)
    sparse[0, 0, 2:4, 3:6] = torch.rand(2, 3) + 0.1
    logits = torch.where(sparse > 0, sparse.clamp_min(1e-12).log(), torch.full_like(sparse, -60.0))
    assert afformer_loss(logits, None, sparse).total.item() == pytest.approx(0.0, abs=1e-5)


def test_empty_targets_are_left_out_of_the_mean():
    torch.manual_seed(0)
    logits = torch.randn(2, 2, 8, 8)
    target = torch.rand(2, 2, 8, 8)
    full = heatmap_kl(logits, target)[0]
    target[1, 0] = 0
    loss = afformer_loss(logits, None, target).heatmap
    assert loss.item() == pytest.approx(((full.sum() - full[1, 0]) / 3).item(), rel=1e-6)


def test_action_channel_selection_and_cross_entropy():
    torch.manual_seed(0)
    logits = torch.randn(2, 7, 8, 8)
    action_logits = torch.randn(2, 7)
    actions = torch.tensor([3, 5])
    target = torch.rand(2, 1, 8, 8)
    terms = afformer_loss(logits, action_logits, target, actions)
    per_sample = [
        heatmap_kl(logits[i : i + 1, a : a + 1], target[i : i + 1])[0] for i, a in enumerate([3, 5])
    ]
    assert terms.heatmap.item() == pytest.approx(torch.cat(per_sample).mean().item(), rel=1e-6)
    logp = action_logits.log_softmax(-1)
    assert terms.action.item() == pytest.approx(-(logp[0, 3] + logp[1, 5]).item() / 2, rel=1e-6)
    assert terms.total.item() == pytest.approx(terms.heatmap.item() + terms.action.item(), rel=1e-6)
    with pytest.raises(ValueError, match="heatmap channels"):
        afformer_loss(logits, action_logits, torch.rand(2, 2, 8, 8), actions)
