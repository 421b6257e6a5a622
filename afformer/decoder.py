"""Fine-grained multi-scale decoder (seed 002, equations 8-10): one block shared across image levels.

Level i (coarse to fine) queries with image features + level embedding + the nearest-upsampled
decoding of level i-1, and attends to video level p3 at temporal resolution T / 2**i (the temporal
pyramid: 3D convolutions, kernel (3,1,1), stride (2,1,1); T = 1..64 all work, T_out = ceil(T / 2)).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .attention import AttentionMode, CrossAttention3d, SelfAttention2d
from .layers import ChannelLayerNorm, Mlp


def halved_counts(counts: torch.Tensor | None) -> torch.Tensor | None:
    return None if counts is None else (counts + 1) // 2


def zero_padded_frames(video: torch.Tensor, counts: torch.Tensor | None) -> torch.Tensor:
    """Zero frames past each sample's length in (B, C, T, h, w), so a temporal conv sees them as padding."""
    if counts is None:
        return video
    valid = torch.arange(video.shape[2], device=video.device)[None, :] < counts[:, None]
    return video * valid[:, None, :, None, None].to(video.dtype)


class TemporalPyramid(nn.Module):
    """(B, C, T, h, w) -> [T, ceil(T/2), ceil(T/4)] frames; padded frames stay zero at every step."""

    def __init__(self, dim: int, levels: int = 3):
        super().__init__()
        if levels > 3:
            raise ValueError("the temporal pyramid has at most 3 levels (T, T/2, T/4)")
        self.levels = levels

        def conv() -> nn.Conv3d:
            return nn.Conv3d(dim, dim, (3, 1, 1), stride=(2, 1, 1), padding=(1, 0, 0), bias=False)

        # only what the levels use (the authors' 3-level layout: conv, norm, GELU, conv)
        if levels > 1:
            self.down1 = conv()
        if levels > 2:
            self.norm = ChannelLayerNorm(dim, spatial_dims=3, stored_shape_full=True)
            self.act = nn.GELU()
            self.down2 = conv()

    def forward(
        self, video: torch.Tensor, counts: torch.Tensor | None
    ) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        out = [(video, counts)]
        if self.levels > 1:
            video, counts = self.down1(zero_padded_frames(video, counts)), halved_counts(counts)
            out.append((video, counts))
        if self.levels > 2:
            video = zero_padded_frames(self.act(self.norm(video)), counts)
            out.append((self.down2(video), halved_counts(counts)))
        return out


class DecoderBlock(nn.Module):
    """Pre-norm: self-attention (image), cross-attention (image -> video), MLP."""

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
        self.norm_self = nn.LayerNorm(dim, eps=1e-6)
        self.self_attn = SelfAttention2d(dim, heads, max_q_thw[1:], mode)
        self.norm_cross_q = nn.LayerNorm(dim, eps=1e-6)
        self.norm_cross_kv = nn.LayerNorm(dim, eps=1e-6)
        self.cross_attn = CrossAttention3d(dim, heads, max_q_thw, max_kv_thw, mode)
        self.norm_mlp = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def set_attention_mode(self, mode: AttentionMode) -> None:
        self.self_attn.mode = self.cross_attn.mode = mode

    def forward(self, x: torch.Tensor, memory: torch.Tensor, counts: torch.Tensor | None) -> torch.Tensor:
        """x: (B, H, W, C) image tokens; memory: (B, T, h, w, C) video tokens."""
        x = x + self.self_attn(self.norm_self(x))
        x = x + self.cross_attn(self.norm_cross_q(x), self.norm_cross_kv(memory), counts)
        return x + self.mlp(self.norm_mlp(x))


class Decoder(nn.Module):
    def __init__(
        self,
        dim: int,
        heads: int,
        mlp_ratio: float,
        num_levels: int,
        max_q_thw: Sequence[int],
        max_kv_thw: Sequence[int],
        temporal_pyramid: bool,
        mode: AttentionMode,
    ):
        super().__init__()
        self.num_levels = num_levels
        self.temporal_pyramid = TemporalPyramid(dim, num_levels) if temporal_pyramid else None
        self.level_embeds = nn.ParameterList(
            nn.Parameter(nn.init.trunc_normal_(torch.zeros(dim), std=0.02)) for _ in range(num_levels)
        )
        self.block = DecoderBlock(dim, heads, mlp_ratio, max_q_thw, max_kv_thw, mode)

    def forward(
        self, image_levels: list[torch.Tensor], video: torch.Tensor, counts: torch.Tensor | None
    ) -> torch.Tensor:
        """image_levels: (B, C, H_i, W_i) coarse to fine; video: (B, C, T, h, w) -> (B, C, H, W) finest."""
        if self.temporal_pyramid is not None:
            videos = self.temporal_pyramid(video, counts)
        else:
            videos = [(video, counts)] * self.num_levels
        decoded = None
        for i, feat in enumerate(image_levels):
            x = feat.permute(0, 2, 3, 1) + self.level_embeds[i]
            if decoded is not None:
                up = F.interpolate(decoded.permute(0, 3, 1, 2), size=feat.shape[-2:], mode="nearest")
                x = x + up.permute(0, 2, 3, 1)
            memory, level_counts = videos[i]
            decoded = self.block(x, memory.permute(0, 2, 3, 4, 1), level_counts)
        assert decoded is not None
        return decoded.permute(0, 3, 1, 2)
