"""The MaskAHand target recipe (seed 002 section 4.2, tables 5 and 8): parameters, rendering, replay.

Synthesis is split in two so that it is reproducible on any device:

1. :func:`sample_params` draws every random choice of one target on the CPU from a generator seeded by
   (seed, clip key, variant): the frame, the random context masks, the perspective corners, the noise
   seed. The result is the target's provenance, a plain JSON-able dict.
2. :func:`render` turns a batch of provenances plus their frames into targets and heatmaps with
   deterministic batched tensor ops on the CPU or a GPU. :func:`replay` is ``render`` for one target.

"Crop to the largest valid region" follows the authors' release: after the warp, the image is cropped to
the bounding box of the pixels that came from the source frame (the warped frame corners), then resized.
Crop and resize are folded into the warp's homography, so each target is resampled once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from ..core.config import SynthConfig
from ..mine.rule import HandRule, hand_interacts
from . import ops

Provenance = dict[str, Any]


class NoInteractingFrameError(ValueError):
    """A clip has no frame with an interacting hand box of positive size."""


def target_seed(seed: int, clip_key: str, variant: int) -> int:
    """A 63-bit seed for one target, stable across processes, machines and Python versions."""
    digest = hashlib.sha256(f"{seed}\x00{clip_key}\x00{variant}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def interacting_hands(meta: dict[str, Any]) -> dict[int, list[list[float]]]:
    """Clip position -> boxes (clipped to the frame, positive size) of the interacting hands there.

    Only frames listed in ``meta["interacting"]`` (the miner's verdict) are candidates; inside them the
    hands that pass the clip's ``rule`` are the ones masked and put in the ground truth.
    """
    width, height = int(meta["width"]), int(meta["height"])
    rule = HandRule.from_record(meta.get("rule"))
    detections = meta.get("detections") or []
    positions = meta.get("interacting", range(len(detections)))
    out: dict[int, list[list[float]]] = {}
    for pos in positions:
        boxes = []
        for hand in detections[pos]:
            if not hand_interacts(hand, rule):
                continue
            x1, y1, x2, y2 = (float(v) for v in hand["box"])
            x1, x2 = min(max(x1, 0.0), width), min(max(x2, 0.0), width)
            y1, y2 = min(max(y1, 0.0), height), min(max(y2, 0.0), height)
            if x2 > x1 and y2 > y1:
                boxes.append([x1, y1, x2, y2])
        if boxes:
            out[int(pos)] = boxes
    return out


def _perspective_corners(gen: torch.Generator, width: int, height: int, distortion: float) -> torch.Tensor:
    """Warped positions of the frame's corners, drawn as torchvision's RandomPerspective does.

    Each corner moves inwards by up to ``distortion`` x half the frame size along each axis.
    """
    u = torch.rand(4, 2, generator=gen, dtype=torch.float64)
    dx = u[:, 0] * distortion * (width - 1) / 2
    dy = u[:, 1] * distortion * (height - 1) / 2
    w1, h1 = width - 1, height - 1
    return torch.tensor(
        [
            [dx[0], dy[0]],
            [w1 - dx[1], dy[1]],
            [w1 - dx[2], h1 - dy[2]],
            [dx[3], h1 - dy[3]],
        ],
        dtype=torch.float64,
    )


def sample_params(cfg: SynthConfig, clip_key: str, meta: dict[str, Any], variant: int) -> Provenance:
    """Draw every random choice of target ``variant`` of a clip; raises NoInteractingFrameError."""
    hands = interacting_hands(meta)
    if not hands:
        raise NoInteractingFrameError(f"clip {clip_key!r} has no frame with an interacting hand")
    width, height = int(meta["width"]), int(meta["height"])
    seed = target_seed(cfg.seed, clip_key, variant)
    gen = torch.Generator(device="cpu").manual_seed(seed)

    positions = sorted(hands)
    frame = positions[int(torch.randint(len(positions), (1,), generator=gen))]
    hand_boxes = torch.tensor(hands[frame], dtype=torch.float64)

    if cfg.hand_mask_mode == "random_sides":  # the authors' rule; draws only in this mode
        sides = torch.rand(len(hand_boxes), 4, generator=gen, dtype=torch.float64)
        hand_context = ops.grow_box_sides(hand_boxes, sides, cfg.hand_mask_scale, width, height)
    elif cfg.hand_mask_mode == "centered":
        hand_context = ops.enlarge_boxes(hand_boxes, cfg.hand_mask_scale, width, height)
    else:
        raise ValueError(f"unknown synth.hand_mask_mode {cfg.hand_mask_mode!r} (random_sides or centered)")
    sizes = (hand_context[:, 2:] - hand_context[:, :2]).repeat_interleave(cfg.random_masks, dim=0)
    # Random masks keep their hand mask's sub-pixel offset, so they cover exactly as many pixels.
    u = torch.rand(sizes.shape[0], 2, generator=gen, dtype=torch.float64)
    frame_wh = torch.tensor([width, height], dtype=torch.float64)
    frac = hand_context[:, :2].repeat_interleave(cfg.random_masks, dim=0).frac()
    origin = (u * ((frame_wh - sizes - frac).floor() + 1)).floor() + frac
    random_masks = torch.cat([origin, origin + sizes], dim=1)
    masks = torch.cat([hand_context, random_masks]) if cfg.hand_masks else random_masks

    corners = _perspective_corners(gen, width, height, cfg.distortion_scale)
    noise_seed = int(torch.randint(2**31 - 1, (1,), generator=gen))

    # deferred: kornia at import
    from kornia.geometry.transform import get_perspective_transform

    frame_corners = torch.tensor(
        [[0, 0], [width - 1, 0], [width - 1, height - 1], [0, height - 1]], dtype=torch.float64
    )
    homography = get_perspective_transform(frame_corners[None], corners[None])[0]
    homography = homography / homography[2, 2]
    crop = torch.cat([corners.min(dim=0).values, corners.max(dim=0).values])
    output_h = ops.crop_resize_matrix(crop[None], cfg.output_size)[0] @ homography

    frame_indices = meta.get("frame_indices") or []
    return {
        "clip_key": clip_key,
        "variant": variant,
        "seed": cfg.seed,
        "target_seed": seed,
        "frame": frame,
        "frame_index": int(frame_indices[frame]) if frame < len(frame_indices) else frame,
        "source_size": [width, height],
        "hand_boxes": hand_boxes.tolist(),
        "mask_boxes": masks.tolist(),  # the hand context masks first, then the random ones
        "hand_masks": len(hand_boxes) if cfg.hand_masks else 0,
        "hand_mask_mode": cfg.hand_mask_mode,
        "corners": corners.tolist(),
        "homography": homography.tolist(),
        "crop": crop.tolist(),
        "output_homography": output_h.tolist(),
        "fill": cfg.fill,
        "noise_seed": noise_seed,
        "size": cfg.output_size,
        "blur_kernel": cfg.blur_kernel,
        "blur_sigma": cfg.blur_sigma,
    }


def _padded_boxes(lists: Sequence[list[list[float]]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Ragged box lists -> ``(B, N, 4)`` float64 boxes and a ``(B, N)`` validity mask."""
    n = max(1, max(len(b) for b in lists))
    boxes = torch.zeros(len(lists), n, 4, dtype=torch.float64)
    valid = torch.zeros(len(lists), n, dtype=torch.bool)
    for i, b in enumerate(lists):
        if b:
            boxes[i, : len(b)] = torch.tensor(b, dtype=torch.float64)
            valid[i, : len(b)] = True
    return boxes, valid


def _check_batch(frames: torch.Tensor, params: Sequence[Provenance]) -> tuple[int, str, int, float | None]:
    if frames.dtype != torch.uint8 or frames.ndim != 4 or frames.shape[1] != 3:
        raise ValueError(f"frames must be uint8 (B, 3, H, W), got {frames.dtype} {tuple(frames.shape)}")
    if frames.shape[0] != len(params):
        raise ValueError(f"{frames.shape[0]} frames for {len(params)} target parameter sets")
    height, width = frames.shape[-2:]
    keys = {(p["size"], p["fill"], p["blur_kernel"], p["blur_sigma"]) for p in params}
    if len(keys) != 1:
        raise ValueError(f"one render batch must share size, fill and blur settings, got {sorted(keys)}")
    for p in params:
        if list(p["source_size"]) != [width, height]:
            raise ValueError(
                f"target {p['clip_key']}#{p['variant']} was drawn for a {p['source_size']} frame, "
                f"got {width}x{height}"
            )
    size, fill, kernel, sigma = keys.pop()
    return size, fill, kernel, sigma


@torch.no_grad()
def mask_frames(frames: torch.Tensor, params: Sequence[Provenance]) -> tuple[torch.Tensor, torch.Tensor]:
    """Step 1 of rendering: frames with their context masks filled, and the hand-box regions.

    Returns ``uint8 (B, 3, H, W)`` masked frames and ``bool (B, H, W)`` interacting-hand-box masks.
    """
    _, fill, _, _ = _check_batch(frames, params)
    device = frames.device
    height, width = frames.shape[-2:]
    mask_boxes, mask_valid = _padded_boxes([p["mask_boxes"] for p in params])
    hand_boxes, hand_valid = _padded_boxes([p["hand_boxes"] for p in params])
    context = ops.rasterize_boxes(mask_boxes.to(device), mask_valid.to(device), height, width)
    hand_region = ops.rasterize_boxes(hand_boxes.to(device), hand_valid.to(device), height, width)
    noise_seeds = torch.tensor([p["noise_seed"] for p in params], dtype=torch.int64)
    return ops.fill_masked(frames, context, fill, noise_seeds.to(device)), hand_region


@torch.no_grad()
def render_binary(frames: torch.Tensor, params: Sequence[Provenance]) -> tuple[torch.Tensor, torch.Tensor]:
    """Targets ``uint8 (B, 3, S, S)`` and the un-blurred ground truth ``bool (B, S, S)``."""
    if not params:
        raise ValueError("render needs at least one target")
    size, _, _, _ = _check_batch(frames, params)
    device = frames.device
    masked, hand_region = mask_frames(frames, params)

    mats = torch.tensor([p["output_homography"] for p in params], dtype=torch.float64)
    # image channels and the hand-box mask in one tensor: one warp call, exactly shared parameters
    stacked = torch.empty(masked.shape[0], 4, *masked.shape[-2:], device=device)
    stacked[:, :3] = masked
    stacked[:, 3] = hand_region
    warped = ops.warp_to_output(stacked, mats.to(device), size)
    targets = warped[:, :3].round().clamp(0, 255).to(torch.uint8)
    gt = warped[:, 3] >= 0.5

    # A tiny hand can shrink below half a pixel after the warp: its warped centre pixel keeps it in
    # the ground truth. Computed in float64 on the CPU so every device marks the same pixel.
    hand_boxes, hand_valid = _padded_boxes([p["hand_boxes"] for p in params])
    centres = (hand_boxes[..., :2] + hand_boxes[..., 2:]) / 2 - 0.5  # pixel-centre coordinates
    centres = ops.apply_homography(mats, centres).round().clamp(0, size - 1).long()
    item = torch.arange(len(params))[:, None].expand_as(hand_valid)[hand_valid]
    cx, cy = centres[..., 0][hand_valid], centres[..., 1][hand_valid]
    gt[item.to(device), cy.to(device), cx.to(device)] = True
    return targets, gt


@torch.no_grad()
def render(frames: torch.Tensor, params: Sequence[Provenance]) -> tuple[torch.Tensor, torch.Tensor]:
    """Targets ``uint8 (B, 3, S, S)`` and heatmaps ``float32 (B, S, S)`` from chosen frames and params.

    ``frames`` are the chosen frames ``uint8 (B, 3, H, W)`` on the device to render on; all must have
    the size the params were drawn for. Deterministic: a target depends only on its frame and params.
    """
    targets, gt = render_binary(frames, params)
    _, _, kernel, sigma = _check_batch(frames, params)
    return targets, ops.gaussian_blur(gt.float(), kernel, sigma).clamp_(0, 1)


def render_grouped(frames: Sequence[torch.Tensor], params: Sequence[Provenance], batch_size: int):
    """``render`` over frames of mixed sizes: batches of at most ``batch_size`` frames of one size.

    Returns targets and heatmaps in the input order.
    """
    order: dict[tuple[int, ...], list[int]] = {}
    for i, f in enumerate(frames):
        order.setdefault(tuple(f.shape[-2:]), []).append(i)
    targets: list[torch.Tensor | None] = [None] * len(frames)
    heatmaps: list[torch.Tensor | None] = [None] * len(frames)
    for idx in order.values():
        for start in range(0, len(idx), batch_size):
            chunk = idx[start : start + batch_size]
            t, h = render(torch.stack([frames[i] for i in chunk]), [params[i] for i in chunk])
            for j, i in enumerate(chunk):
                targets[i], heatmaps[i] = t[j], h[j]
    return targets, heatmaps


def replay(provenance: Provenance, frame: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Re-create one target ``uint8 (3, S, S)`` and heatmap ``float32 (S, S)`` from its provenance.

    ``frame`` is the clip frame at ``provenance["frame"]`` as stored in the clip shard.
    """
    t, h = render(frame[None], [provenance])
    return t[0], h[0]


@torch.no_grad()
def resize_frames(frames: torch.Tensor, size: int) -> torch.Tensor:
    """Video frames ``uint8 (T, 3, H, W)`` resized to ``size`` x ``size`` (antialiased bilinear).

    On the CPU torch resizes uint8 directly (a vectorised path, ~9x faster than via float); on a GPU
    through float. The two round differently by at most 1 level.
    """

    if frames.device.type == "cpu":
        return F.interpolate(frames, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    out = F.interpolate(
        frames.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False
    )
    return out.round().clamp(0, 255).to(torch.uint8)
