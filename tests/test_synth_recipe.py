"""MaskAHand recipe: geometry, masking, config knobs, determinism and replay (seed 002 section 4.2)."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from maskahand.core.config import SynthConfig
from maskahand.synth import recipe as rc

W, H = 200, 150


def clip_meta(
    hands_at: dict[int, list[list[float]]], t: int = 6, state: str = "contact", score: float = 0.995
):
    detections = [[] for _ in range(t)]
    for pos, boxes in hands_at.items():
        detections[pos] = [{"box": b, "state": state, "score": score} for b in boxes]
    return {
        "width": W,
        "height": H,
        "frame_indices": [10 * i for i in range(t)],
        "detections": detections,
        "interacting": sorted(hands_at),
        "rule": {"contact_score": 0.99, "unknown_rule": "score", "unknown_score": 0.9},
    }


def random_frame(seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (3, H, W), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def box_pixels(box: list[float]) -> tuple[slice, slice]:
    """Rows and columns a box overlaps (independent of the code under test)."""
    x1, y1, x2, y2 = box
    return slice(math.floor(y1), math.ceil(y2)), slice(math.floor(x1), math.ceil(x2))


def warped_box_region(params: dict, size: int) -> np.ndarray:
    """OpenCV's nearest-neighbour warp of the hand-box mask with the stored source->output homography."""
    src = np.zeros((H, W), np.uint8)
    for box in params["hand_boxes"]:
        src[box_pixels(box)] = 1
    hom = np.array(params["output_homography"], np.float64)
    return cv2.warpPerspective(src, hom, (size, size), flags=cv2.INTER_NEAREST) > 0


def boundary(mask: np.ndarray) -> np.ndarray:
    k = np.ones((3, 3), np.uint8)
    m = mask.astype(np.uint8)
    return cv2.dilate(m, k) != cv2.erode(m, k)


ONE_HAND = {2: [[60.0, 40.0, 120.0, 110.0]]}
TWO_HANDS = {1: [[20.0, 30.0, 70.0, 80.0], [130.0, 60.0, 180.0, 120.0]]}


@pytest.mark.parametrize("hands", [ONE_HAND, TWO_HANDS], ids=["one_hand", "two_hands"])
def test_binary_ground_truth_is_the_warped_hand_box_region(hands):
    cfg = SynthConfig(output_size=128)
    meta = clip_meta(hands)
    frame = random_frame()
    for variant in range(6):
        p = rc.sample_params(cfg, "clip", meta, variant)
        _, gt = rc.render_binary(frame[None], [p])
        expected = warped_box_region(p, cfg.output_size)
        got = gt[0].numpy()
        # Bilinear-then-threshold and OpenCV's nearest sampling may only disagree on the region's rim.
        assert not ((got != expected) & ~boundary(expected)).any()
        iou = (got & expected).sum() / (got | expected).sum()
        assert iou > 0.9


def test_homography_maps_the_frame_onto_the_whole_output():
    cfg = SynthConfig(output_size=96)
    for variant in range(5):
        p = rc.sample_params(cfg, "clip", clip_meta(ONE_HAND), variant)
        hom = np.array(p["output_homography"])
        corners = np.array([[0, 0, 1], [W - 1, 0, 1], [W - 1, H - 1, 1], [0, H - 1, 1]], np.float64)
        mapped = corners @ hom.T
        mapped = mapped[:, :2] / mapped[:, 2:]
        # crop to the largest valid region: the warped frame's bounding box fills the output exactly
        np.testing.assert_allclose(mapped.min(axis=0), [0, 0], atol=1e-9)
        np.testing.assert_allclose(mapped.max(axis=0), [95, 95], atol=1e-9)
        # the warp moved each corner inwards by at most distortion * half the frame
        warp = np.array(p["homography"])
        moved = corners @ warp.T
        moved = moved[:, :2] / moved[:, 2:]
        shift = np.abs(moved - corners[:, :2])
        assert (shift[:, 0] <= 0.5 * (W - 1) / 2 + 1e-9).all() and (
            shift[:, 1] <= 0.5 * (H - 1) / 2 + 1e-9
        ).all()


def test_heatmap_mass_lies_in_the_warped_hand_boxes():
    meta = clip_meta(ONE_HAND)
    frame = random_frame()
    sharp = SynthConfig(output_size=128, blur_kernel=1)
    blurred = SynthConfig(output_size=128, blur_kernel=31)
    for variant in range(4):
        p = rc.sample_params(sharp, "clip", meta, variant)
        region = warped_box_region(p, 128)
        _, heat = rc.render(frame[None], [p])
        heat = heat[0].numpy()
        inside = heat[region | boundary(region)].sum() / heat.sum()
        assert inside == pytest.approx(1.0)
        assert heat.max() == 1.0 and heat.min() == 0.0

        _, heat = rc.render(frame[None], [rc.sample_params(blurred, "clip", meta, variant)])
        heat = heat[0].numpy()
        assert region[np.unravel_index(heat.argmax(), heat.shape)]
        assert heat[region].sum() / heat.sum() > 0.6
        assert heat.min() >= 0.0 and heat.max() <= 1.0


def test_every_pixel_of_the_enlarged_hand_region_is_masked():
    cfg = SynthConfig(fill="zero", hand_mask_scale=1.5, random_masks=1, hand_mask_mode="centered")
    frame = torch.full((3, H, W), 200, dtype=torch.uint8)
    for hands in (ONE_HAND, TWO_HANDS):
        for variant in range(4):
            p = rc.sample_params(cfg, "clip", clip_meta(hands), variant)
            masked, _ = rc.mask_frames(frame[None], [p])
            masked = masked[0].numpy()
            expected = np.zeros((H, W), bool)
            for x1, y1, x2, y2 in p["hand_boxes"]:
                cx, cy, hw, hh = (x1 + x2) / 2, (y1 + y2) / 2, 0.75 * (x2 - x1), 0.75 * (y2 - y1)
                box = [max(cx - hw, 0), max(cy - hh, 0), min(cx + hw, W), min(cy + hh, H)]
                expected[box_pixels(box)] = True
            assert (masked[:, expected] == 0).all()
            all_masks = np.zeros((H, W), bool)
            for box in p["mask_boxes"]:
                all_masks[box_pixels(box)] = True
            assert (masked[:, ~all_masks] == 200).all()  # nothing else touched
            assert (masked[:, all_masks] == 0).all()


def test_noise_fill_is_uniform_in_0_255():
    cfg = SynthConfig(fill="noise", hand_mask_scale=2.0)
    frame = torch.full((3, H, W), 77, dtype=torch.uint8)
    p = rc.sample_params(cfg, "clip", clip_meta(ONE_HAND), 0)
    masked, _ = rc.mask_frames(frame[None], [p])
    region = np.zeros((H, W), bool)
    region[box_pixels(p["mask_boxes"][0])] = True
    values = masked[0].numpy()[:, region].ravel()
    assert values.size > 20000
    counts = np.bincount(values, minlength=256)
    expected = values.size / 256
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert chi2 < 400  # 255 degrees of freedom: mean 255, sd 22.6
    assert values.min() == 0 and values.max() == 255


@pytest.mark.parametrize("random_masks", [1, 2])
def test_random_masks_have_the_hand_mask_size_and_stay_in_the_frame(random_masks):
    cfg = SynthConfig(hand_mask_scale=2.0, random_masks=random_masks, hand_mask_mode="centered")
    hands = {0: [[0.0, 0.0, 40.0, 30.0], [150.0, 100.0, 200.0, 150.0], [60.3, 70.6, 81.1, 95.2]]}
    for variant in range(5):
        p = rc.sample_params(cfg, "clip", clip_meta(hands), variant)
        n = len(p["hand_boxes"])
        hand_masks, random = np.array(p["mask_boxes"][:n]), np.array(p["mask_boxes"][n:])
        assert len(random) == n * random_masks
        np.testing.assert_allclose(hand_masks[0], [0, 0, 60, 45])  # 2x about the centre, clipped
        np.testing.assert_allclose(hand_masks[1], [125, 75, 200, 150])  # at the border: clipped masks
        np.testing.assert_allclose(hand_masks[2], [49.9, 58.3, 91.5, 107.5])  # sub-pixel box
        sizes = hand_masks[:, 2:] - hand_masks[:, :2]
        np.testing.assert_allclose(random[:, 2:] - random[:, :2], np.repeat(sizes, random_masks, axis=0))
        assert (random[:, :2] >= 0).all() and (random[:, 2] <= W).all() and (random[:, 3] <= H).all()
        # and cover the same number of pixels
        pixels = np.ceil(np.array(p["mask_boxes"])[:, 2:]) - np.floor(np.array(p["mask_boxes"])[:, :2])
        np.testing.assert_array_equal(pixels[n:], np.repeat(pixels[:n], random_masks, axis=0))


def authors_hand_masks(cfg: SynthConfig, key: str, meta: dict, variant: int) -> np.ndarray:
    """The authors' rule (affodist/dataset.py) written out here: each side moves out by its own
    U(0, r-1) * sqrt(area), then the mask is clipped to the frame. The uniforms are the generator's
    draws right after the frame choice (the documented draw order of ``sample_params``)."""
    hands = rc.interacting_hands(meta)
    gen = torch.Generator().manual_seed(rc.target_seed(cfg.seed, key, variant))
    frame = sorted(hands)[int(torch.randint(len(hands), (1,), generator=gen))]
    boxes = np.array(hands[frame], np.float64)
    u = torch.rand(len(boxes), 4, generator=gen, dtype=torch.float64).numpy()
    reach = (cfg.hand_mask_scale - 1) * np.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
    out = boxes + np.array([-1, -1, 1, 1]) * u * reach[:, None]
    return np.clip(out, 0, [W, H, W, H])


def test_default_hand_mask_follows_the_authors_random_sides_rule():
    cfg = SynthConfig(random_masks=2)
    assert cfg.hand_mask_mode == "random_sides" and cfg.hand_mask_scale == 1.5
    hands = {0: [[60.0, 40.0, 120.0, 110.0], [5.3, 100.2, 31.9, 148.7]], 3: [[150.0, 20.0, 199.0, 60.0]]}
    meta = clip_meta(hands)
    left_minus_right = []
    for variant in range(40):
        p = rc.sample_params(cfg, "clip", meta, variant)
        n = len(p["hand_boxes"])
        expected = authors_hand_masks(cfg, "clip", meta, variant)
        np.testing.assert_allclose(p["mask_boxes"][:n], expected, rtol=0, atol=1e-9)
        assert p["hand_mask_mode"] == "random_sides"
        hand = np.array(p["hand_boxes"])
        masks = np.array(p["mask_boxes"])
        left_minus_right += list((hand[:, 0] - masks[:n, 0]) - (masks[:n, 2] - hand[:, 2]))
        # random masks have the size of their (enlarged) hand mask and stay in the frame
        sizes = masks[:n, 2:] - masks[:n, :2]
        np.testing.assert_allclose(masks[n:, 2:] - masks[n:, :2], np.repeat(sizes, 2, axis=0), atol=1e-9)
        assert (masks[n:, :2] >= 0).all() and (masks[n:, 2] <= W).all() and (masks[n:, 3] <= H).all()
    # the hand is not at the centre of its mask: left and right margins differ, either way
    assert min(left_minus_right) < -5 and max(left_minus_right) > 5


def test_hand_mask_modes_render_what_their_boxes_say():
    frame = torch.full((3, H, W), 200, dtype=torch.uint8)
    meta = clip_meta(TWO_HANDS)
    for mode in ("random_sides", "centered"):
        cfg = SynthConfig(fill="zero", hand_mask_mode=mode)
        params = [rc.sample_params(cfg, "clip", meta, v) for v in range(4)]
        masked, _ = rc.mask_frames(frame[None].expand(4, -1, -1, -1).contiguous(), params)
        for k, p in enumerate(params):
            expected = np.zeros((H, W), bool)
            for box in p["mask_boxes"]:
                expected[box_pixels(box)] = True
            assert ((masked[k].numpy() == 0).all(0) == expected).all()
    centred = rc.sample_params(SynthConfig(hand_mask_mode="centered"), "clip", meta, 0)
    sides = rc.sample_params(SynthConfig(), "clip", meta, 0)
    assert centred["mask_boxes"][:2] != sides["mask_boxes"][:2]


@pytest.mark.parametrize(
    "boxes",
    [
        [[0.0, 0.0, 25.0, 30.0]],
        [[W - 25.0, H - 30.0, float(W), float(H)]],
        [[-15.0, 100.0, 12.0, 170.0]],  # partly outside the frame
        [[120.0, 70.0, 121.0, 71.0]],  # 1 x 1 pixel
        [[120.2, 70.1, 120.6, 70.4]],  # sub-pixel
        [[5.0, 5.0, 9.0, 8.0], [W - 9.0, H - 8.0, W - 5.0, H - 5.0]],  # two tiny hands in opposite corners
    ],
    ids=["top_left", "bottom_right", "outside", "one_pixel", "sub_pixel", "two_tiny"],
)
def test_no_target_or_ground_truth_is_empty(boxes):
    cfg = SynthConfig(output_size=64, distortion_scale=1.0)
    frame = random_frame(3)
    params = [rc.sample_params(cfg, "clip", clip_meta({0: boxes}), v) for v in range(8)]
    targets, gt = rc.render_binary(frame[None].expand(8, -1, -1, -1).contiguous(), params)
    _, heat = rc.render(frame[None].expand(8, -1, -1, -1).contiguous(), params)
    for k, p in enumerate(params):
        assert len(p["hand_boxes"]) == len(boxes)
        x0, y0, x1, y1 = p["crop"]
        assert x1 - x0 > 1 and y1 - y0 > 1
        assert targets[k].float().std() > 10  # real content, not an empty crop
        assert gt[k].any() and heat[k].sum() > 0
        # each hand's own ground truth: the pixel of its warped centre is set
        hom = np.array(p["output_homography"])
        for x1b, y1b, x2b, y2b in p["hand_boxes"]:
            c = hom @ np.array([(x1b + x2b) / 2 - 0.5, (y1b + y2b) / 2 - 0.5, 1.0])
            u, v = np.clip(np.round(c[:2] / c[2]).astype(int), 0, 63)
            assert gt[k, v, u]


def test_fill_zero_gives_zeros_in_the_masked_region_of_the_target():
    frame = torch.full((3, H, W), 180, dtype=torch.uint8)
    size = 100
    for fill in ("zero", "noise"):
        cfg = SynthConfig(fill=fill, distortion_scale=0.0, output_size=size)
        p = rc.sample_params(cfg, "clip", clip_meta(ONE_HAND), 0)
        target, _ = rc.render_binary(frame[None], [p])
        masked = np.zeros((H, W), bool)
        for box in p["mask_boxes"]:
            masked[box_pixels(box)] = True
        # output pixels whose bilinear footprint lies wholly in the masked region (identity warp + resize)
        xs = np.arange(size) * (W - 1) / (size - 1)
        ys = np.arange(size) * (H - 1) / (size - 1)
        cols = [np.floor(xs).astype(int), np.ceil(xs).astype(int)]
        rows = [np.floor(ys).astype(int), np.ceil(ys).astype(int)]
        inside = np.ones((size, size), bool)
        for r in rows:
            for c in cols:
                inside &= masked[r][:, c]
        assert inside.sum() > 200
        values = target[0].numpy()[:, inside]
        if fill == "zero":
            assert (values == 0).all()
        else:
            assert values.mean() > 60 and (values != 180).mean() > 0.9


def test_distortion_zero_is_an_identity_warp():
    size = 120
    cfg = SynthConfig(distortion_scale=0.0, output_size=size)
    frame = random_frame(1)
    p = rc.sample_params(cfg, "clip", clip_meta(TWO_HANDS), 0)
    np.testing.assert_allclose(p["homography"], np.eye(3), atol=1e-12)
    np.testing.assert_allclose(p["crop"], [0, 0, W - 1, H - 1])
    target, _ = rc.render_binary(frame[None], [p])
    masked, _ = rc.mask_frames(frame[None], [p])
    resized = F.interpolate(masked.float(), size=(size, size), mode="bilinear", align_corners=True).round()
    assert (target.float() - resized).abs().max() <= 1


def test_interacting_hands_follow_the_clip_rule():
    meta = clip_meta({1: [[10.0, 10.0, 50.0, 50.0]], 3: [[60.0, 60.0, 90.0, 90.0]]})
    meta["detections"][1].append({"box": [100.0, 10.0, 140.0, 50.0], "state": "no_contact", "score": 1.0})
    meta["detections"][3][0]["score"] = 0.5  # below contact_score: not interacting
    meta["detections"][3].append({"box": [0.0, 0.0, 20.0, 20.0], "state": "unknown", "score": 0.95})
    assert rc.interacting_hands(meta) == {1: [[10.0, 10.0, 50.0, 50.0]], 3: [[0.0, 0.0, 20.0, 20.0]]}
    meta["rule"]["unknown_rule"] = "never"
    assert rc.interacting_hands(meta) == {1: [[10.0, 10.0, 50.0, 50.0]]}
    degenerate = clip_meta({0: [[W + 5.0, 10.0, W + 50.0, 40.0]]})  # entirely outside the frame
    with pytest.raises(rc.NoInteractingFrameError, match="clip 'c1'"):
        rc.sample_params(SynthConfig(), "c1", degenerate, 0)


def test_only_interacting_frames_are_chosen():
    meta = clip_meta({2: [[10.0, 10.0, 40.0, 40.0]], 4: [[50.0, 50.0, 90.0, 90.0]]}, t=8)
    chosen = {rc.sample_params(SynthConfig(), "clip", meta, v)["frame"] for v in range(40)}
    assert chosen == {2, 4}
    p = rc.sample_params(SynthConfig(), "clip", meta, 0)
    assert p["frame_index"] == meta["frame_indices"][p["frame"]]


def test_params_are_deterministic_and_depend_on_seed_key_and_variant():
    meta = clip_meta(TWO_HANDS)
    cfg = SynthConfig(seed=5)
    a = rc.sample_params(cfg, "clip", meta, 1)
    assert a == rc.sample_params(cfg, "clip", meta, 1)
    assert a["corners"] != rc.sample_params(cfg, "clip", meta, 2)["corners"]
    assert a["corners"] != rc.sample_params(cfg, "other", meta, 1)["corners"]
    assert a["corners"] != rc.sample_params(SynthConfig(seed=6), "clip", meta, 1)["corners"]
    # another interpreter (other hash seed) draws the same parameters
    code = (
        "import json, sys; from maskahand.core.config import SynthConfig; from maskahand.synth import recipe as rc; "
        "meta = json.loads(sys.argv[1]); print(json.dumps(rc.sample_params(SynthConfig(seed=5), 'clip', meta, 1)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, json.dumps(meta)], capture_output=True, text=True, check=True
    )
    assert json.loads(out.stdout) == json.loads(json.dumps(a))


def test_replay_recreates_each_target_of_a_batch_exactly():
    cfg = SynthConfig(output_size=96)
    hands = [ONE_HAND, TWO_HANDS, {0: [[0.0, 0.0, 30.0, 30.0]]}]
    params, frames = [], []
    for i in range(6):
        meta = clip_meta(hands[i % 3])
        params.append(rc.sample_params(cfg, f"clip{i}", meta, i % 2))
        frames.append(random_frame(i))
    targets, heatmaps = rc.render(torch.stack(frames), params)
    for i, p in enumerate(params):
        prov = json.loads(json.dumps(p))  # as stored in the shard's JSON
        t, h = rc.replay(prov, frames[i])
        assert torch.equal(t, targets[i])
        torch.testing.assert_close(h, heatmaps[i], atol=1e-6, rtol=0)


def test_render_rejects_mismatched_inputs():
    cfg = SynthConfig(output_size=64)
    p = rc.sample_params(cfg, "clip", clip_meta(ONE_HAND), 0)
    with pytest.raises(ValueError, match="drawn for a \\[200, 150\\] frame"):
        rc.render(torch.zeros(1, 3, 100, 100, dtype=torch.uint8), [p])
    with pytest.raises(ValueError, match="uint8"):
        rc.render(torch.zeros(1, 3, H, W), [p])
    other = rc.sample_params(SynthConfig(output_size=32), "clip", clip_meta(ONE_HAND), 0)
    with pytest.raises(ValueError, match="share size"):
        rc.render(torch.zeros(2, 3, H, W, dtype=torch.uint8), [p, other])


def test_table5_no_mask_setting_leaves_the_frame_unmasked():
    cfg = SynthConfig(hand_masks=0, random_masks=0, fill="zero")
    frame = torch.full((3, H, W), 90, dtype=torch.uint8)
    p = rc.sample_params(cfg, "clip", clip_meta(TWO_HANDS), 0)
    assert p["mask_boxes"] == [] and p["hand_masks"] == 0
    masked, hand_region = rc.mask_frames(frame[None], [p])
    assert torch.equal(masked[0], frame) and hand_region.any()
    only_random = rc.sample_params(SynthConfig(hand_masks=0, random_masks=2), "clip", clip_meta(TWO_HANDS), 0)
    assert len(only_random["mask_boxes"]) == 4 and only_random["hand_masks"] == 0


def test_config_validation_names_the_bad_key():
    from maskahand.core.config import SynthRecipe
    from maskahand.core.configbase import ConfigError, load_config

    recipe = load_config(SynthRecipe, overrides=["synth.fill=zero", "synth.distortion_scale=0.25"])
    assert recipe.synth.fill == "zero" and recipe.synth.distortion_scale == 0.25
    for bad in (
        "synth.fill=black",
        "synth.hand_mask_scale=0.5",
        "synth.blur_kernel=84",
        "synth.hand_masks=2",
        "synth.hand_mask_mode=middle",
    ):
        with pytest.raises((ConfigError, ValueError)):
            load_config(SynthRecipe, overrides=[bad])
