"""Heatmap KL (seed 002 equation 11) and the action term."""

from __future__ import annotations

import math

import pytest
import torch

from maskahand.afformer.loss import action_probabilities, afformer_loss, heatmap_kl


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


def _bce(logits: list[list[float]], target: list[list[float]]) -> float:
    """Hand-written binary cross-entropy, averaged over batch x classes."""
    terms = [
        -(y * math.log(1 / (1 + math.exp(-x))) + (1 - y) * math.log(1 - 1 / (1 + math.exp(-x))))
        for row_x, row_y in zip(logits, target)
        for x, y in zip(row_x, row_y)
    ]
    return sum(terms) / len(terms)


def test_action_index_selects_the_heatmap_channel_and_gives_one_hot_bce():
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
    one_hot = [[float(c == a) for c in range(7)] for a in (3, 5)]
    assert terms.action.item() == pytest.approx(_bce(action_logits.tolist(), one_hot), rel=1e-6)
    assert terms.total.item() == pytest.approx(terms.heatmap.item() + terms.action.item(), rel=1e-6)
    with pytest.raises(ValueError, match="heatmap channels"):
        afformer_loss(logits, action_logits, torch.rand(2, 2, 8, 8), actions)


def test_multi_hot_actions_bce_over_batch_and_classes_and_their_heatmaps():
    """The authors' multi-label loss: BCE on a multi-hot target (mean over B x classes); the heatmap
    term averages KL over each sample's actions only (other channels, even with mass, do not count)."""
    torch.manual_seed(1)
    logits = torch.randn(2, 7, 8, 8)
    action_logits = torch.randn(2, 7)
    hot = torch.zeros(2, 7)
    hot[0, [1, 4]] = 1
    hot[1, 2] = 1
    target = torch.rand(2, 7, 8, 8)  # every channel has mass; only (0,1), (0,4), (1,2) are targets
    terms = afformer_loss(logits, action_logits, target, hot)
    kl = heatmap_kl(logits, target)[0]
    assert terms.heatmap.item() == pytest.approx(((kl[0, 1] + kl[0, 4] + kl[1, 2]) / 3).item(), rel=1e-6)
    assert terms.action.item() == pytest.approx(_bce(action_logits.tolist(), hot.tolist()), rel=1e-6)
    # bool multi-hot is the same target; two actions cannot share one (B, 1, H, W) heatmap
    same = afformer_loss(logits, action_logits, target, hot.bool())
    assert same.total.item() == pytest.approx(terms.total.item(), rel=1e-7)
    with pytest.raises(ValueError, match="exactly one action"):
        afformer_loss(logits, action_logits, target[:, :1], hot)
    with pytest.raises(ValueError, match="only 0 and 1"):
        afformer_loss(logits, action_logits, target, hot * 0.5)
    with pytest.raises(ValueError, match=r"\(B, 7\) multi-hot"):
        afformer_loss(logits, action_logits, target, hot[:, :5])
    with pytest.raises(ValueError, match="0..6"):
        afformer_loss(logits, action_logits, target[:, :1], torch.tensor([2, 7]))


def test_action_probabilities_are_independent_sigmoids():
    logits = torch.tensor([[2.0, 2.0, -1.0], [0.0, -3.0, 5.0]])
    probs = action_probabilities(logits)
    want = [[1 / (1 + math.exp(-x)) for x in row] for row in logits.tolist()]
    torch.testing.assert_close(probs, torch.tensor(want))
    assert probs[0].sum().item() > 1.5  # two likely actions at once: not a softmax
