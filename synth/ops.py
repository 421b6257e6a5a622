"""Batched tensor primitives of MaskAHand synthesis: box masks, noise fill, perspective warp, blur.

Conventions used throughout ``maskahand.synth``:

- Boxes are ``(x1, y1, x2, y2)`` in pixel-edge coordinates of their frame (``0..W``, ``0..H``), as
  detectors report them. A box covers every pixel it overlaps: columns ``floor(x1) .. ceil(x2) - 1``.
- Homographies act on pixel-centre coordinates (pixel ``(row i, col j)`` is the point ``(j, i)``),
  which is kornia's ``align_corners=True`` convention.
- All functions work on a whole batch at once and on any device; none draws random numbers.
"""

from __future__ import annotations

import functools

import torch

_MASK32 = 0xFFFFFFFF


def opencv_sigma(kernel: int) -> float:
    """Gaussian sigma that OpenCV and torchvision derive from a kernel size when none is given."""
    return 0.3 * ((kernel - 1) * 0.5 - 1) + 0.8


def enlarge_boxes(boxes: torch.Tensor, scale: float, width: int, height: int) -> torch.Tensor:
    """Boxes ``(..., 4)`` scaled by ``scale`` about their centres, then clipped to the frame."""
    cx = (boxes[..., 0] + boxes[..., 2]) / 2
    cy = (boxes[..., 1] + boxes[..., 3]) / 2
    hw = (boxes[..., 2] - boxes[..., 0]) * scale / 2
    hh = (boxes[..., 3] - boxes[..., 1]) * scale / 2
    out = torch.stack([cx - hw, cy - hh, cx + hw, cy + hh], dim=-1)
    return clip_boxes(out, width, height)


def grow_box_sides(
    boxes: torch.Tensor, uniforms: torch.Tensor, ratio: float, width: int, height: int
) -> torch.Tensor:
    """The authors' hand mask: each side of a box ``(..., 4)`` moved outwards on its own, then clipped.

    Side ``i`` (x1, y1, x2, y2) moves by ``uniforms[..., i] * (ratio - 1) * sqrt(box area)``, with
    ``uniforms`` in [0, 1): the hand lies anywhere inside its mask, not at its centre.
    """
    x1, y1, x2, y2 = boxes.unbind(-1)
    reach = (ratio - 1) * ((x2 - x1) * (y2 - y1)).clamp(min=0).sqrt()
    grow = uniforms * reach[..., None]
    sign = torch.tensor([-1.0, -1.0, 1.0, 1.0], dtype=boxes.dtype, device=boxes.device)
    return clip_boxes(boxes + sign * grow, width, height)


def clip_boxes(boxes: torch.Tensor, width: int, height: int) -> torch.Tensor:
    x = boxes[..., 0::2].clamp(0, width)
    y = boxes[..., 1::2].clamp(0, height)
    return torch.stack([x[..., 0], y[..., 0], x[..., 1], y[..., 1]], dim=-1)


def rasterize_boxes(boxes: torch.Tensor, valid: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Union of boxes per batch item as a bool mask ``(B, H, W)``.

    ``boxes`` is ``(B, N, 4)``, ``valid`` ``(B, N)`` marks which of the N slots hold a box (batches
    mix targets with different numbers of boxes). Pure broadcasting: no loop over boxes or pixels.
    """
    device = boxes.device
    x1 = boxes[..., 0].floor()
    y1 = boxes[..., 1].floor()
    x2 = boxes[..., 2].ceil()
    y2 = boxes[..., 3].ceil()
    cols = torch.arange(width, device=device, dtype=boxes.dtype)
    rows = torch.arange(height, device=device, dtype=boxes.dtype)
    in_x = (cols >= x1[..., None]) & (cols < x2[..., None])  # (B, N, W)
    in_y = (rows >= y1[..., None]) & (rows < y2[..., None]) & valid[..., None]  # (B, N, H)
    # A union of N rectangles = OR over N of outer products; as a float matmul it is one batched op.
    hits = torch.bmm(in_y.transpose(1, 2).float(), in_x.float())  # (B, H, W): boxes covering the pixel
    return hits > 0


def hash_noise(seeds: torch.Tensor, counters: torch.Tensor) -> torch.Tensor:
    """Three uniform random bytes per (seed, counter) pair as uint8 ``(3, N)``, identical on every device.

    A counter-based integer hash: no generator state, so the CPU and a GPU produce the same bytes
    and a target can be re-created from its seed alone. Every product stays below 2**63 (values below
    2**32 times constants below 2**31), so the int64 arithmetic never overflows.
    """
    x = counters.to(torch.int64) * 0x9E3779B1
    x.add_(seeds.to(torch.int64) & _MASK32).bitwise_and_(_MASK32)
    for shift, mult in ((16, 0x7FEB352D), (15, 0x2C1B3C6D), (12, 0x297A2D39)):
        x.bitwise_xor_(x >> shift).mul_(mult).bitwise_and_(_MASK32)
    x.bitwise_xor_(x >> 15)
    return torch.stack([x & 0xFF, (x >> 8) & 0xFF, (x >> 16) & 0xFF]).to(torch.uint8)


def fill_masked(
    images: torch.Tensor, mask: torch.Tensor, fill: str, noise_seeds: torch.Tensor | None = None
) -> torch.Tensor:
    """uint8 images ``(B, 3, H, W)`` with the pixels under ``mask`` ``(B, H, W)`` replaced.

    ``fill`` is ``"noise"`` (uniform 0..255 from one seed per item) or ``"zero"``. Noise is hashed only
    for masked pixels, from their flat index inside their image, so it does not depend on the batch.
    """
    if fill == "zero":
        return images.masked_fill(mask[:, None], 0)
    if fill != "noise":
        raise ValueError(f"unknown fill {fill!r} (expected 'noise' or 'zero')")
    if noise_seeds is None:
        raise ValueError("fill='noise' needs noise_seeds")
    b, c, h, w = images.shape
    item, pixel = mask.reshape(b, h * w).nonzero(as_tuple=True)
    noise = hash_noise(noise_seeds.to(images.device)[item], pixel)
    out = images.clone()
    flat = out.view(b, c, h * w)
    for ch in range(c):
        flat[item, ch, pixel] = noise[ch]
    return out


def crop_resize_matrix(crop: torch.Tensor, size: int) -> torch.Tensor:
    """Affine maps ``(B, 3, 3)`` taking pixel-centre crop boxes ``(B, 4)`` onto a ``size`` x ``size`` grid."""
    x0, y0, x1, y1 = crop.unbind(-1)
    sx = (size - 1) / (x1 - x0)
    sy = (size - 1) / (y1 - y0)
    mat = torch.zeros(crop.shape[0], 3, 3, dtype=crop.dtype, device=crop.device)
    mat[:, 0, 0] = sx
    mat[:, 0, 2] = -x0 * sx
    mat[:, 1, 1] = sy
    mat[:, 1, 2] = -y0 * sy
    mat[:, 2, 2] = 1
    return mat


def apply_homography(mat: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Points ``(B, N, 2)`` mapped by homographies ``(B, 3, 3)``."""
    ones = torch.ones_like(points[..., :1])
    hom = torch.cat([points, ones], dim=-1) @ mat.transpose(1, 2)
    return hom[..., :2] / hom[..., 2:]


def warp_to_output(images: torch.Tensor, mats: torch.Tensor, size: int) -> torch.Tensor:
    """Float images ``(B, C, H, W)`` warped by source-to-output homographies onto ``size`` x ``size``.

    Bilinear, zeros outside the source, kornia's pixel-centre (``align_corners=True``) convention.
    Image channels and the hand-box mask go through one call, so they share the warp exactly.
    """
    # deferred: kornia at import
    from kornia.geometry.transform import warp_perspective

    return warp_perspective(
        images, mats.to(images.dtype), (size, size), mode="bilinear", padding_mode="zeros", align_corners=True
    )


def reflect_index(idx: torch.Tensor, n: int) -> torch.Tensor:
    """Indices folded into ``0..n-1`` by mirroring without repeating the edge (torch's ``reflect``)."""
    if n == 1:
        return torch.zeros_like(idx)
    period = 2 * (n - 1)
    idx = idx.remainder(period)
    return torch.where(idx >= n, period - idx, idx)


@functools.lru_cache(maxsize=16)
def blur_matrix(size: int, kernel: int, sigma: float, device: str) -> torch.Tensor:
    """``(size, size)`` matrix ``G`` with ``G @ x`` = 1-D Gaussian blur of the rows of ``x``, reflect border.

    The weights are kornia's Gaussian kernel; applying them as two dense matmuls (``G @ X @ G.T``) is far
    faster than an 85-tap convolution on CPUs and GPUs (see ``benchmarks.synth``).
    """
    # deferred: kornia at import
    from kornia.filters import get_gaussian_kernel1d

    # Built on the CPU in float64 (a GPU's atomic accumulation could vary in the last bit), then moved.
    weights = get_gaussian_kernel1d(kernel, sigma, dtype=torch.float64)[0]
    radius = kernel // 2
    rows = torch.arange(size)[:, None].expand(size, kernel)
    cols = reflect_index(rows + torch.arange(-radius, radius + 1), size)
    mat = torch.zeros(size, size, dtype=torch.float64)
    mat.index_put_((rows, cols), weights.expand(size, kernel), accumulate=True)
    return mat.float().to(device)


def gaussian_blur(masks: torch.Tensor, kernel: int, sigma: float | None) -> torch.Tensor:
    """Float masks ``(B, S, S)`` blurred with an odd ``kernel`` (reflect border, as torchvision/kornia)."""
    if masks.shape[-1] != masks.shape[-2]:
        raise ValueError(f"gaussian_blur expects square maps, got {tuple(masks.shape)}")
    s = opencv_sigma(kernel) if sigma is None else float(sigma)
    g = blur_matrix(masks.shape[-1], kernel, s, str(masks.device))
    return g @ masks @ g.T
