"""Batched primitives of synthesis checked against independent references (torchvision, kornia, loops)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torchvision.transforms.functional import gaussian_blur as tv_gaussian_blur

from maskahand.synth import ops


@pytest.mark.parametrize("kernel,size", [(85, 256), (15, 48), (3, 16), (1, 8)])
def test_gaussian_blur_matches_torchvision(kernel, size):
    maps = (torch.rand(3, size, size, generator=torch.Generator().manual_seed(kernel)) > 0.8).float()
    expected = tv_gaussian_blur(maps[:, None], [kernel, kernel])[
        :, 0
    ]  # sigma from the kernel, reflect border
    torch.testing.assert_close(ops.gaussian_blur(maps, kernel, None), expected, atol=2e-6, rtol=0)


def test_gaussian_blur_with_explicit_sigma_matches_kornia():
    from kornia.filters import gaussian_blur2d

    maps = torch.rand(2, 64, 64, generator=torch.Generator().manual_seed(1))
    expected = gaussian_blur2d(maps[:, None], (21, 21), (2.5, 2.5), border_type="reflect")[:, 0]
    torch.testing.assert_close(ops.gaussian_blur(maps, 21, 2.5), expected, atol=2e-6, rtol=0)


def test_rasterize_boxes_matches_a_pixel_loop():
    h, w = 23, 31
    boxes = torch.tensor(
        [
            [[0.0, 0.0, 3.2, 4.0], [10.5, 7.9, 20.0, 15.1], [0, 0, 0, 0]],
            [[28.7, 20.2, 31.0, 23.0], [5, 5, 6, 6], [1, 1, 2, 2]],
        ]
    )
    valid = torch.tensor([[True, True, False], [True, True, True]])
    got = ops.rasterize_boxes(boxes, valid, h, w).numpy()
    expected = np.zeros((2, h, w), bool)
    for b in range(2):
        for n in range(3):
            if not valid[b, n]:
                continue
            x1, y1, x2, y2 = boxes[b, n].tolist()
            for i in range(h):
                for j in range(w):
                    # pixel (i, j) covers [j, j+1) x [i, i+1): masked when it overlaps the box
                    expected[b, i, j] |= j + 1 > x1 and j < x2 and i + 1 > y1 and i < y2
    np.testing.assert_array_equal(got, expected)


def test_enlarge_boxes_scales_about_the_centre_and_clips():
    boxes = torch.tensor([[10.0, 20.0, 30.0, 60.0], [0.0, 0.0, 10.0, 10.0]])
    got = ops.enlarge_boxes(boxes, 1.5, width=100, height=50)
    torch.testing.assert_close(got, torch.tensor([[5.0, 10.0, 35.0, 50.0], [0.0, 0.0, 12.5, 12.5]]))


def test_hash_noise_is_deterministic_uniform_and_seed_dependent():
    counters = torch.arange(200_000)
    a = ops.hash_noise(torch.full_like(counters, 7), counters)
    assert a.shape == (3, 200_000) and a.dtype == torch.uint8
    assert torch.equal(a, ops.hash_noise(torch.full_like(counters, 7), counters))
    b = ops.hash_noise(torch.full_like(counters, 8), counters)
    assert (a != b).float().mean() > 0.99
    for channel in a:
        counts = np.bincount(channel.numpy(), minlength=256)
        expected = channel.numel() / 256
        assert ((counts - expected) ** 2 / expected).sum() < 400  # chi-square, 255 dof
    # neighbouring pixels and channels are uncorrelated
    x = a.float() - 127.5
    assert abs(float((x[0, 1:] * x[0, :-1]).mean() / x[0].var())) < 0.02
    assert abs(float((x[0] * x[1]).mean() / x[0].var())) < 0.02


def test_crop_resize_matrix_maps_the_crop_onto_the_grid():
    crop = torch.tensor([[10.0, 20.0, 110.0, 70.0]], dtype=torch.float64)
    mat = ops.crop_resize_matrix(crop, 51)
    pts = ops.apply_homography(
        mat, torch.tensor([[[10.0, 20.0], [110.0, 70.0], [60.0, 45.0]]], dtype=torch.float64)
    )
    torch.testing.assert_close(
        pts[0], torch.tensor([[0.0, 0.0], [50.0, 50.0], [25.0, 25.0]], dtype=torch.float64)
    )


def test_opencv_sigma_rule():
    assert ops.opencv_sigma(85) == pytest.approx(0.3 * (42 - 1) + 0.8)
    assert math.isclose(ops.opencv_sigma(3), 0.8)
