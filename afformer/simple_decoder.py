"""The authors' decoder for the ViTDet encoder (showlab/afformer ``SimpleDecoder``, used by
``configs/opra/vitdet_b.yaml``): one pre-norm block in which the image tokens (stride 16) cross-attend
to the video tokens, downsampled by a 3x3 stride-2 convolution to stride 32, with 3D (t, h, w) relative
positions; then an MLP. No self-attention, no temporal pyramid, no level embedding.

Padded frames of shorter clips (``counts``) are masked out of the attention, and the time rows follow
the authors' rule (:func:`maskahand.afformer.relpos.time_rows`), so each sample's result equals
running it alone, as in :mod:`maskahand.afformer.decoder`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .attention import AttentionMode, CrossAttention3d
from .layers import Mlp


class CrossBlock(nn.Module):
    """x + cross_attn(norm_q(x), norm_kv(memory)); x + mlp(norm_mlp(x)) (the authors' ``Cross3DBlock``)."""

    def __init__(
        self,
        dim: int,
        heads: int,
        mlp_ratio: float,
        max_q_thw: Sequence[int],
        max_kv_thw: Sequence[int],
        mode: AttentionMode,
    ):
        super().__init__()
        self.norm_q = nn.LayerNorm(dim, eps=1e-6)
        self.norm_kv = nn.LayerNorm(dim, eps=1e-6)
        self.cross_attn = CrossAttention3d(dim, heads, max_q_thw, max_kv_thw, mode)
        self.norm_mlp = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, memory: torch.Tensor, counts: torch.Tensor | None) -> torch.Tensor:
        """x: (B, H, W, C) image tokens; memory: (B, T, h, w, C) video tokens."""
        x = x + self.cross_attn(self.norm_q(x), self.norm_kv(memory), counts)
        return x + self.mlp(self.norm_mlp(x))


class SimpleDecoder(nn.Module):
    def __init__(
        self,
        dim: int,
        heads: int,
        mlp_ratio: float,
        max_q_thw: Sequence[int],
        max_kv_thw: Sequence[int],
        mode: AttentionMode,
    ):
        super().__init__()
        self.down = nn.Conv2d(dim, dim, 3, stride=2, padding=1, bias=False)
        self.cross_block = CrossBlock(dim, heads, mlp_ratio, max_q_thw, max_kv_thw, mode)

    def set_attention_mode(self, mode: AttentionMode) -> None:
        self.cross_block.cross_attn.mode = mode

    def forward(self, image: torch.Tensor, video: torch.Tensor, counts: torch.Tensor | None) -> torch.Tensor:
        """image: (B, C, H, W); video: (B, C, T, h, w), frames past ``counts`` are padding -> (B, C, H, W)."""
        b, c, t = video.shape[:3]
        frames = self.down(video.transpose(1, 2).flatten(0, 1))  # per frame, as the authors' Conv2d
        memory = frames.unflatten(0, (b, t)).permute(0, 1, 3, 4, 2)
        out = self.cross_block(image.permute(0, 2, 3, 1), memory, counts)
        return out.permute(0, 3, 1, 2)
