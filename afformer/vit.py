"""ViTDet's plain ViT (Li et al. 2022; detectron2 ``modeling/backbone/vit.py``) as the Afformer encoder.

The layout is the authors' ``ViTDetSimplePyramid`` (showlab/afformer ``afformer/encoder.py``): one
patch embedding and absolute position table, then ``shared_blocks`` (the first ``depth - trainable``
blocks, frozen) run by image and frames alike, then two copies of the last ``trainable`` blocks:
``video_blocks`` (the original, frozen) for the frames and ``image_blocks`` (a trainable copy) for the
target image. Both paths end at stride 16 with ``dim`` channels (detectron2's ``last_feat``); the
authors feed that single level to their ``SimpleDecoder`` (:mod:`maskahand.afformer.simple_decoder`),
they do not use ViTDet's simple feature pyramid.

Blocks: pre-norm attention and MLP. Attention in the window blocks runs inside non-overlapping
``window`` x ``window`` windows (the token grid zero-padded to a multiple of the window after the
norm; the padded tokens take part as keys, as in detectron2), the ``global_blocks`` attend over the
whole grid. Each attention adds decomposed relative positions (:mod:`maskahand.afformer.relpos`, one
table per axis, sized for the window or for the pretraining grid ``img_size / patch`` and linearly
resized for other grids) through the same two attention formulations as the decoder
(:func:`maskahand.afformer.attention.attend`). The absolute position table was learned on a
``pretrain_size / patch`` grid with a class token; the class row is dropped and the grid resized
bicubically to the input's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .attention import AttentionMode, attend, merge_heads
from .layers import Mlp
from .relpos import gather_rel_pos, spatial_rel_logits

# detectron2 configs/common/data/constants.py imagenet_rgb256_mean / _std (mask_rcnn_vitdet.py uses them),
# on the 0..255 scale, RGB
VITDET_PIXEL_MEAN = (123.675, 116.28, 103.53)
VITDET_PIXEL_STD = (58.395, 57.12, 57.375)


@dataclass(frozen=True)
class ViTSpec:
    """Sizes of the plain ViT; the defaults are ViTDet-B (detectron2 ``mask_rcnn_vitdet.py``)."""

    dim: int = 768
    depth: int = 12
    heads: int = 12
    patch: int = 16
    mlp_ratio: float = 4.0
    window: int = 14
    global_blocks: tuple[int, ...] = (2, 5, 8, 11)  # the blocks outside window_block_indexes
    img_size: int = 1024  # the global blocks' relative-position tables cover img_size / patch
    pretrain_size: int = 224  # the absolute table: (pretrain_size / patch)^2 rows + a class-token row
    drop_path: float = 0.1  # stochastic depth rising linearly to this over the blocks (image blocks only)
    trainable: int = 1  # the last blocks copied into the trainable image path (the authors' `trainable`)

    def block_drop_rate(self, index: int) -> float:
        if self.depth == 1:
            return 0.0
        return self.drop_path * index / (self.depth - 1)  # torch.linspace(0, drop_path, depth)


def window_partition(x: torch.Tensor, window: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """(B, H, W, C) -> (B * windows, window, window, C), zero-padding H and W up to multiples of ``window``."""
    b, h, w, c = x.shape
    pad_h, pad_w = -h % window, -w % window
    if pad_h or pad_w:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    hp, wp = h + pad_h, w + pad_w
    x = x.view(b, hp // window, window, wp // window, window, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, window, window, c), (hp, wp)


def window_unpartition(
    windows: torch.Tensor, window: int, padded_hw: tuple[int, int], hw: tuple[int, int]
) -> torch.Tensor:
    """Inverse of :func:`window_partition`, dropping the padding: (B, H, W, C)."""
    hp, wp = padded_hw
    b = windows.shape[0] // ((hp // window) * (wp // window))
    x = windows.view(b, hp // window, wp // window, window, window, -1).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, hp, wp, -1)[:, : hw[0], : hw[1]]


def resized_abs_pos(table: torch.Tensor, hw: Sequence[int], has_cls_token: bool = True) -> torch.Tensor:
    """The absolute position table (1, [1 +] S*S, C) as (1, H, W, C): class row dropped, bicubic resize."""
    if has_cls_token:
        table = table[:, 1:]
    side = int(math.isqrt(table.shape[1]))
    if side * side != table.shape[1]:
        raise ValueError(f"absolute position table of {table.shape[1]} rows is not a square grid")
    grid = table.reshape(1, side, side, -1)
    if (side, side) == tuple(hw):
        return grid
    grid = F.interpolate(grid.permute(0, 3, 1, 2), size=tuple(hw), mode="bicubic", align_corners=False)
    return grid.permute(0, 2, 3, 1)


class PatchEmbed(nn.Module):
    """Non-overlapping patch projection: (B, 3, H, W) -> (B, H/p, W/p, C)."""

    def __init__(self, patch: int, dim: int):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, patch, stride=patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).permute(0, 2, 3, 1)


class ViTAttention(nn.Module):
    """Multi-head self-attention over a (H, W) grid with decomposed relative positions (tables sized for
    ``grid``: the window, or the pretraining token grid of a global block)."""

    def __init__(self, dim: int, heads: int, grid: int, mode: AttentionMode = "efficient"):
        super().__init__()
        self.heads, self.mode = heads, mode
        head_dim = dim // heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        # detectron2's rel_pos_zero_init: zeros until weights are loaded
        self.rel_pos_h = nn.Parameter(torch.zeros(2 * grid - 1, head_dim))
        self.rel_pos_w = nn.Parameter(torch.zeros(2 * grid - 1, head_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        qkv = self.qkv(x).reshape(b, h * w, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        terms = spatial_rel_logits(
            q, (h, w), gather_rel_pos(h, h, self.rel_pos_h), gather_rel_pos(w, w, self.rel_pos_w)
        )
        out = attend(q, k, v, terms, (h, w), self.mode)
        return self.proj(merge_heads(out)).reshape(b, h, w, c)


class DropPath(nn.Module):
    """Stochastic depth: in training, drop a sample's residual branch with probability ``rate``."""

    def __init__(self, rate: float):
        super().__init__()
        self.rate = rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask / keep


class ViTBlock(nn.Module):
    def __init__(self, spec: ViTSpec, index: int, drop_path: float = 0.0, mode: AttentionMode = "efficient"):
        super().__init__()
        self.window = 0 if index in spec.global_blocks else spec.window
        grid = self.window if self.window else spec.img_size // spec.patch
        self.norm1 = nn.LayerNorm(spec.dim, eps=1e-6)
        self.attn = ViTAttention(spec.dim, spec.heads, grid, mode)
        self.norm2 = nn.LayerNorm(spec.dim, eps=1e-6)
        self.mlp = Mlp(spec.dim, int(spec.dim * spec.mlp_ratio))
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.norm1(x)
        if self.window:
            h, w = x.shape[1:3]
            windows, padded = window_partition(x, self.window)
            x = window_unpartition(self.attn(windows), self.window, padded, (h, w))
        else:
            x = self.attn(x)
        x = shortcut + self.drop_path(x)
        return x + self.drop_path(self.mlp(self.norm2(x)))


class ViTDetEncoder(nn.Module):
    """Normalises uint8 / [0, 1] RGB and returns stride-``patch`` features (B, C, H/p, W/p) of the image
    path (:meth:`image_features`) and of the video path (:meth:`frame_features`)."""

    pixel_mean: torch.Tensor  # buffers (not saved: the authors' checkpoints hold no statistics)
    pixel_std: torch.Tensor

    def __init__(self, spec: ViTSpec, mode: AttentionMode = "efficient", chunk: int = 0):
        super().__init__()
        if not 0 <= spec.trainable <= spec.depth:
            raise ValueError(f"trainable blocks must lie in 0..{spec.depth}, got {spec.trainable}")
        self.spec, self.chunk = spec, chunk
        self.register_buffer("pixel_mean", torch.tensor(VITDET_PIXEL_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(VITDET_PIXEL_STD).view(1, 3, 1, 1), persistent=False)
        self.patch_embed = PatchEmbed(spec.patch, spec.dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + (spec.pretrain_size // spec.patch) ** 2, spec.dim))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.start = spec.depth - spec.trainable  # absolute index of video_blocks[0] / image_blocks[0]
        self.shared_blocks = nn.ModuleList(ViTBlock(spec, i, 0.0, mode) for i in range(self.start))
        self.video_blocks = nn.ModuleList(ViTBlock(spec, i, 0.0, mode) for i in range(self.start, spec.depth))
        self.image_blocks = nn.ModuleList(
            ViTBlock(spec, i, spec.block_drop_rate(i), mode) for i in range(self.start, spec.depth)
        )
        self.apply(_init_weights)
        self.copy_video_blocks_to_image_blocks()
        self.set_trainable(freeze_all=False)

    def copy_video_blocks_to_image_blocks(self) -> None:
        """The authors' image path starts as a deep copy of the frozen video path's blocks."""
        for image_block, video_block in zip(self.image_blocks, self.video_blocks):
            image_block.load_state_dict(video_block.state_dict())

    def set_trainable(self, freeze_all: bool = False) -> None:
        """As the authors: only the image blocks train (patch, position table, shared and video blocks frozen)."""
        for name, p in self.named_parameters():
            p.requires_grad_(not freeze_all and name.startswith("image_blocks."))

    def set_attention_mode(self, mode: AttentionMode) -> None:
        for m in self.modules():
            if isinstance(m, ViTAttention):
                m.mode = mode

    def layer_id(self, name: str) -> int:
        """detectron2's ``get_vit_lr_decay_rate`` layer of a parameter name (relative to this module):
        0 for the patch and position embeddings, i + 1 for ViT block i, depth + 1 for anything else."""
        if name.startswith(("patch_embed.", "pos_embed")):
            return 0
        for prefix, offset in (
            ("shared_blocks.", 0),
            ("video_blocks.", self.start),
            ("image_blocks.", self.start),
        ):
            if name.startswith(prefix):
                return int(name[len(prefix) :].split(".", 1)[0]) + offset + 1
        return self.spec.depth + 1

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        if images.dtype == torch.uint8:
            x = images.float()
        else:
            x = images * 255.0  # [0, 1] inputs: the statistics are on the 0..255 scale
        x = (x - self.pixel_mean) / self.pixel_std
        x = self.patch_embed(x)
        return x + resized_abs_pos(self.pos_embed, x.shape[1:3]).to(x.dtype)

    def _run(self, x: torch.Tensor, blocks: nn.ModuleList) -> torch.Tensor:
        for block in blocks:
            x = block(x)
        return x

    def _chunked(self, images: torch.Tensor, tail: nn.ModuleList) -> torch.Tensor:
        parts = images.split(self.chunk) if self.chunk > 0 else (images,)
        return torch.cat([self._run(self._run(self.embed(p), self.shared_blocks), tail) for p in parts])

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        return self._chunked(images, self.image_blocks).permute(0, 3, 1, 2)

    def frame_features(self, frames: torch.Tensor) -> torch.Tensor:
        return self._chunked(frames, self.video_blocks).permute(0, 3, 1, 2)


def _init_weights(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
