"""Self-attention over image tokens (2D relative positions) and cross-attention from image tokens to
video tokens (3D t/h/w relative positions), each in two numerically equivalent formulations:

- ``reference``: the relative-position terms are broadcast into a dense (B, heads, N_q, N_k) bias and
  passed to ``scaled_dot_product_attention`` as ``attn_mask`` (what the authors hand to xformers);
- ``efficient``: the terms are folded into extra query channels and one-hot key channels
  (:func:`maskahand.afformer.relpos.fold_into_qk`), so SDPA runs its fused kernels with no bias tensor.

Videos of different lengths in one batch: video tokens are padded to the longest clip; the padded
frames get ``MASKED_LOGIT`` in the time term, which reaches the logits through either formulation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from .relpos import (
    MASKED_LOGIT,
    dense_bias,
    fold_into_qk,
    gather_rel_pos,
    spatial_rel_logits,
    table_size,
    temporal_rel_logits,
    time_rows,
)

AttentionMode = Literal["efficient", "reference"]


def attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    rel_terms: Sequence[torch.Tensor],
    k_grid: Sequence[int],
    mode: AttentionMode,
) -> torch.Tensor:
    """softmax(q.k / sqrt(d) + relative terms) v for (B, heads, N, d) tensors."""
    scale = q.shape[-1] ** -0.5
    if mode == "reference":
        bias = dense_bias(rel_terms, k_grid).to(q.dtype)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=scale)
    if mode == "efficient":
        qf, kf, vf = fold_into_qk(q, k, v, rel_terms, k_grid, scale)
        return F.scaled_dot_product_attention(qf, kf, vf, scale=1.0)[..., : v.shape[-1]]
    raise ValueError(f"unknown attention mode {mode!r} (expected 'efficient' or 'reference')")


def split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, N, C) -> (B, heads, N, C / heads)."""
    b, n, c = x.shape
    return x.reshape(b, n, heads, c // heads).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    b, heads, n, d = x.shape
    return x.transpose(1, 2).reshape(b, n, heads * d)


def rel_table(length: int, head_dim: int) -> nn.Parameter:
    table = nn.Parameter(torch.zeros(length, head_dim))
    nn.init.trunc_normal_(table, std=0.02)
    return table


class SelfAttention2d(nn.Module):
    """Multi-head self-attention over an (H, W) token grid with decomposed 2D relative positions."""

    def __init__(self, dim: int, heads: int, max_hw: Sequence[int], mode: AttentionMode = "efficient"):
        super().__init__()
        self.heads, self.mode = heads, mode
        head_dim = dim // heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        self.rel_pos_h = rel_table(table_size(max_hw[0], max_hw[0]), head_dim)
        self.rel_pos_w = rel_table(table_size(max_hw[1], max_hw[1]), head_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        q, k, v = self.qkv(x.reshape(b, h * w, c)).chunk(3, dim=-1)
        q, k, v = (split_heads(t, self.heads) for t in (q, k, v))
        rel_h = gather_rel_pos(h, h, self.rel_pos_h)
        rel_w = gather_rel_pos(w, w, self.rel_pos_w)
        terms = spatial_rel_logits(q, (h, w), rel_h, rel_w)
        out = attend(q, k, v, terms, (h, w), self.mode)
        return self.proj(merge_heads(out)).reshape(b, h, w, c)


class CrossAttention3d(nn.Module):
    """Image tokens (B, H, W, C) attend to video tokens (B, T, h, w, C) with t/h/w relative positions."""

    def __init__(
        self,
        dim: int,
        heads: int,
        max_q_thw: Sequence[int],
        max_kv_thw: Sequence[int],
        mode: AttentionMode = "efficient",
    ):
        super().__init__()
        self.heads, self.mode = heads, mode
        head_dim = dim // heads
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)
        self.rel_pos_t = rel_table(table_size(max_q_thw[0], max_kv_thw[0]), head_dim)
        self.rel_pos_h = rel_table(table_size(max_q_thw[1], max_kv_thw[1]), head_dim)
        self.rel_pos_w = rel_table(table_size(max_q_thw[2], max_kv_thw[2]), head_dim)

    def time_rows(
        self, frames: int, counts: torch.Tensor | None, batch: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-sample time embeddings (B, T, D) (the authors' rule, :func:`relpos.time_rows`) and the
        additive frame mask (B, T) for padded frames."""
        rows = time_rows(self.rel_pos_t, counts, frames)
        if counts is None:
            return rows.expand(batch, -1, -1), rows.new_zeros(batch, frames)
        valid = torch.arange(frames, device=rows.device)[None, :] < counts.to(rows.device)[:, None]
        mask = torch.zeros(batch, frames, device=rows.device, dtype=rows.dtype).masked_fill(
            ~valid, MASKED_LOGIT
        )
        return rows, mask

    def forward(
        self, x: torch.Tensor, memory: torch.Tensor, counts: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``counts`` (B,): valid frames per sample of ``memory`` (None: all frames are valid)."""
        b, h, w, c = x.shape
        _, t, mh, mw, _ = memory.shape
        q = split_heads(self.q_proj(x.reshape(b, h * w, c)), self.heads)
        tokens = memory.reshape(b, t * mh * mw, c)
        k = split_heads(self.k_proj(tokens), self.heads)
        v = split_heads(self.v_proj(tokens), self.heads)
        rows, frame_mask = self.time_rows(t, counts, b)
        term_t = temporal_rel_logits(q, rows) + frame_mask[:, None, None, :].to(q.dtype)
        term_h, term_w = spatial_rel_logits(
            q, (h, w), gather_rel_pos(h, mh, self.rel_pos_h), gather_rel_pos(w, mw, self.rel_pos_w)
        )
        out = attend(q, k, v, (term_t, term_h, term_w), (t, mh, mw), self.mode)
        return self.proj(merge_heads(out)).reshape(b, h, w, c)
