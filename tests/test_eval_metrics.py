"""Metric protocols against cases worked out by hand (values in the comments)."""

from __future__ import annotations

import math

import pytest
import torch

from maskahand.evaluation import metrics as M
from maskahand.evaluation.baselines import center_bias_map

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def test_kernel_sizes_and_opencv_small_table():
    assert M.blur_kernel_size(256, 256) == 85  # int(256 / 3) = 85, odd
    assert M.blur_kernel_size(12, 12) == 5  # int(4) -> even -> 5
    assert M.gaussian_kernel1d(5).tolist() == [1 / 16, 4 / 16, 6 / 16, 4 / 16, 1 / 16]
    g = M.gaussian_kernel1d(85)
    sigma = 0.3 * ((85 - 1) * 0.5 - 1) + 0.8  # 13.1
    assert g[43] / g[42] == pytest.approx(math.exp(-1 / (2 * sigma**2)))


def test_blur_mirrors_the_border_without_repeating_the_edge():
    # [.25 .5 .25] on a point at a border: edge pixel = .5*1 + .25*x[1] + .25*x[-1 -> 1] = .5; next = .25
    for corner in (0, 3):
        x = torch.zeros(4, 4, dtype=torch.float64)
        x[corner, corner] = 1.0
        out = M.gaussian_blur(x, 3)
        step = 1 if corner == 0 else -1
        assert float(out[corner, corner]) == pytest.approx(0.25)  # 0.5 x 0.5 (rows and columns)
        assert float(out[corner, corner + step]) == pytest.approx(0.125)
        assert float(out.sum()) == pytest.approx(0.5625)  # 0.75^2: reflect-101 does not conserve mass


def test_kld_sim_256_by_hand():
    pred = torch.tensor([[[0.5, 0.5]], [[1.0, 3.0]]], dtype=torch.float64)
    gt = torch.tensor([[[0.25, 0.75]], [[1.0, 3.0]]], dtype=torch.float64)
    kld = M.kld_256(pred, gt)
    # .25 ln(.25/.5) + .75 ln(.75/.5) = 0.130812; the second map equals its GT after normalising: 0
    assert kld.tolist() == pytest.approx([0.25 * math.log(0.5) + 0.75 * math.log(1.5), 0.0])
    assert M.sim_256(pred, gt).tolist() == pytest.approx([0.75, 1.0])
    summary, _ = M.score_256(pred, gt)
    assert summary.kld == pytest.approx(0.130812 / 2, abs=1e-6)  # summed over maps, divided by their count
    assert summary.n == 2


def test_kld_256_is_infinite_on_a_zero_prediction():
    pred = torch.tensor([[[1.0, 0.0]]], dtype=torch.float64)
    gt = torch.tensor([[[0.5, 0.5]]], dtype=torch.float64)
    assert math.isinf(float(M.kld_256(pred, gt)[0]))


def test_auc_judd_ties_follow_the_authors_rule():
    s = torch.tensor([1.0, 1.0, 0.0, 0.0])
    # one fixation tied with a non-fixation: tp [0,1,1], fp [0,1/3,1] -> 1/6 + 2/3 = 5/6
    assert M.auc_judd_from_fixations(s, torch.tensor([True, False, False, False])) == pytest.approx(5 / 6)
    # no tie: fp [0, 0, 1] -> 1
    s2 = torch.tensor([1.0, 0.5, 0.0, 0.0])
    assert M.auc_judd_from_fixations(s2, torch.tensor([True, False, False, False])) == pytest.approx(1.0)
    # two tied fixations: thresholds [1, 1], above [2, 2] -> fp [.5, 0]: .125 - .375 + 1 = 0.75 (not 1)
    assert M.auc_judd_from_fixations(s, torch.tensor([True, True, False, False])) == pytest.approx(0.75)
    # constant saliency is undefined (0/0), no fixation too
    assert math.isnan(M.auc_judd_from_fixations(torch.ones(4), torch.tensor([True, False, False, False])))
    assert math.isnan(M.auc_judd_from_fixations(s, torch.zeros(4, dtype=torch.bool)))


def test_auc_256_fixations_above_half_the_max():
    gt = torch.tensor([[0.0, 0.4], [0.6, 1.0]])  # fixations: 0.6 and 1.0 (> 0.5 of max), not 0.4
    pred = torch.tensor([[0.0, 0.9], [0.2, 0.8]])
    # s = [0, 1, .222, .889]; fixated values sorted [.889, .222]; pixels >= them: 2, 3
    # tp [0, .5, 1, 1], fp [0, .5, .5, 1] -> .125 + 0 + .5
    expected = 0.625
    assert M.auc_judd_256(pred, gt) == pytest.approx(expected)  # 0.625


def test_points_truncate_and_clamp_on_the_border():
    rows, cols = M.point_indices([(255.9, 0.2), (-1.5, 3.7), (300, -4)], 256, 256)
    assert cols.tolist() == [255, 0, 255]
    assert rows.tolist() == [0, 3, 0]
    g = M.gt_map_256([[(255.9, 0.2)]], 256, 256)
    assert divmod(int(g.argmax()), 256) == (0, 255)  # peak stays at the corner
    assert float(g.min()) >= M.GT_OFFSET_256 * 0.999  # the offset survives the blur


def test_gt_256_sets_points_but_28_adds_them():
    a, b = (40.0, 40.0), (200.0, 200.0)
    once = M.gt_map_256([[a, b]], 256, 256)
    twice = M.gt_map_256([[a, a, b]], 256, 256)
    assert torch.equal(once, twice)  # set to 1
    once28 = M.gt_map_28([[a, b]], 256, 256)
    twice28 = M.gt_map_28([[a], [a, b]], 256, 256)  # a union of point lists: a counts twice
    assert twice28[5, 5] > once28[5, 5] * 1.2  # a's corner weighs 2/3 instead of 1/2
    assert once28.shape == (28, 28)


def test_28_all_zero_gt_scores_against_uniform_and_drops_out_of_auc():
    pred = torch.ones(2, 28, 28, dtype=torch.float64)
    gt = torch.zeros(2, 28, 28, dtype=torch.float64)
    gt[1, 10, 10] = 1.0
    summary, per = M.score_28(pred, gt)
    assert per["kld"][0] == pytest.approx(0.0, abs=1e-6)  # uniform vs uniform
    assert per["sim"][0] == pytest.approx(1.0, abs=1e-6)
    assert math.isnan(per["auc_j"][0]) and not math.isnan(per["auc_j"][1])
    assert summary.auc_j[0] == pytest.approx(float(per["auc_j"][1]))  # the mean over the defined pair
    assert summary.n == 2


def test_mean_and_standard_error_use_the_population_std():
    m, se = M.mean_se(torch.tensor([1.0, 2.0, 3.0, 4.0, float("nan")]))
    assert m == pytest.approx(2.5)
    assert se == pytest.approx(math.sqrt(1.25) / 2)


def test_top1_counts_the_k_best_actions():
    scores = [torch.tensor([0.1, 0.9, 0.5]), torch.tensor([0.1, 0.9, 0.5])]
    # entry 1: top-1 {1} hits [1]; entry 2: top-2 {1, 2} hits one of [0, 2] -> 2 / 3
    assert M.top1_accuracy(scores, [[1], [0, 2]]) == pytest.approx(2 / 3)


def test_center_bias_is_the_hotspots_truncated_gaussian():
    cb = center_bias_map()
    assert cb.shape == (224, 224)
    assert float(cb[111, 111]) == 1.0
    assert float(cb[111, 111 + 28]) == pytest.approx(0.5)  # FWHM 56: half maximum 28 px from the centre
    assert float(cb[111, 55]) == 0.0 and float(cb[111, 168]) == 0.0  # the kernel's extent
    assert float(cb[56, 167]) > 0.0
