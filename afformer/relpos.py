"""Decomposed relative positions (one learned table per axis), and the two ways to apply them.

Spatial axes (h, w): for ``q_size`` query and ``k_size`` key positions, a table of
``2 * max(q, k) - 1`` rows (linearly resized when it was learned for another extent, e.g. 16x16
queries against a 64x64 table) is indexed by the scaled offset between the positions; the shorter axis
is stretched so both span the same extent (the MViTv2 / ViTDet convention the authors use).

Time axis (cross-attention only; the image query is a single time step): the authors index the raw
time table directly, never resized (their ``get_rel_pos(..., pad=False)`` with ``q_t = 1``): frame
``k`` of a clip with ``T`` frames uses row ``T - 1 - k`` (:func:`time_rows`), at every level of the
temporal pyramid (T, T/2, T/4), each with its own ``T``. The table has ``2 * max_kv_thw[0] - 1`` rows, so
clips longer than that have no row: :func:`check_time_table` says which config key to raise.

The attention logit of query ``i`` and key ``j`` then is ``scale * q_i . k_j + sum_axis q_i . R[i_a, j_a]``.
:func:`spatial_rel_logits` / :func:`temporal_rel_logits` compute the per-axis terms ``q_i . R[i_a, :]``
once (small: queries x axis length);
the reference path broadcasts them into a dense bias, the efficient path concatenates them to the query
and one-hot key positions to the key (:func:`fold_into_qk`), so a fused attention kernel sees no bias.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

MASKED_LOGIT = -1.0e4  # added to logits of padded keys: exp(-1e4) underflows to exactly 0 in fp32/bf16


def table_size(max_q: int, max_k: int) -> int:
    return 2 * max(max_q, max_k) - 1


def resized_table(table: torch.Tensor, length: int) -> torch.Tensor:
    """``table`` (L, D) linearly resampled to (length, D) when L differs."""
    if table.shape[0] == length:
        return table
    resized = F.interpolate(table.t().unsqueeze(0), size=length, mode="linear")
    return resized.squeeze(0).t()


def gather_rel_pos(q_size: int, k_size: int, table: torch.Tensor) -> torch.Tensor:
    """Per (query position, key position) embedding along one axis: (q_size, k_size, D)."""
    table = resized_table(table, table_size(q_size, k_size))
    q_stretch = max(k_size / q_size, 1.0)
    k_stretch = max(q_size / k_size, 1.0)
    q_coords = torch.arange(q_size, device=table.device)[:, None] * q_stretch
    k_coords = torch.arange(k_size, device=table.device)[None, :] * k_stretch
    offsets = (q_coords - k_coords + (k_size - 1) * k_stretch).long()
    return table[offsets]


def check_time_table(table_rows: int, frames: int) -> None:
    """A clip of ``frames`` frames needs rows ``0 .. frames - 1`` of the time table."""
    if frames > table_rows:
        raise ValueError(
            f"a clip of {frames} frames is longer than the cross-attention time table ({table_rows} rows, "
            f"sized by model.max_kv_thw[0]={(table_rows + 1) // 2} as 2 * t - 1): set model.max_kv_thw[0] "
            f"to the clip length ({frames} or more)"
        )


def time_rows(table: torch.Tensor, counts: torch.Tensor | None, frames: int) -> torch.Tensor:
    """The authors' time rule: (B, frames, D), frame ``k`` of a clip of ``n = counts[b]`` frames gets row
    ``n - 1 - k`` of the raw ``table`` (no resizing); frames past ``n`` (padding) get row 0 and are
    masked by the caller. ``counts=None``: every clip has ``frames`` frames, (1, frames, D)."""
    if counts is None:
        check_time_table(table.shape[0], frames)
        return table[:frames].flip(0)[None]
    check_time_table(table.shape[0], int(counts.max()) if counts.numel() else 0)
    k = torch.arange(frames, device=table.device)
    index = (counts.to(table.device)[:, None] - 1 - k[None, :]).clamp_min(0)
    return table[index]


def spatial_rel_logits(q: torch.Tensor, q_hw: Sequence[int], rel_h: torch.Tensor, rel_w: torch.Tensor):
    """Row and column terms for image queries laid out as ``q_hw``.

    q: (B, heads, H*W, D); rel_h: (H, K_h, D), rel_w: (W, K_w, D) from :func:`gather_rel_pos`.
    Returns ``q_i . R_h[y_i, j]`` (B, heads, N_q, K_h) and ``q_i . R_w[x_i, j]`` (B, heads, N_q, K_w).
    """
    b, heads, n_q, dim = q.shape
    h, w = q_hw
    grid = q.reshape(b, heads, h, w, dim)
    term_h = torch.einsum("bnhwd,hkd->bnhwk", grid, rel_h.to(q.dtype)).reshape(b, heads, n_q, -1)
    term_w = torch.einsum("bnhwd,wkd->bnhwk", grid, rel_w.to(q.dtype)).reshape(b, heads, n_q, -1)
    return term_h, term_w


def temporal_rel_logits(q: torch.Tensor, rel_t: torch.Tensor) -> torch.Tensor:
    """Time term of image queries (a single time step) against video keys: (B, heads, N_q, K_t).

    rel_t: (B, K_t, D), one row per key frame, per sample (its length depends on the sample's frames).
    """
    return torch.einsum("bnqd,btd->bnqt", q, rel_t.to(q.dtype))


def dense_bias(rel_terms: Sequence[torch.Tensor], k_grid: Sequence[int]) -> torch.Tensor:
    """Reference path: the full (B, heads, N_q, N_k) bias from per-axis terms (B, heads, N_q, A_k)."""
    bias = None
    ndim = len(k_grid)
    for axis, term in enumerate(rel_terms):
        shape = list(term.shape[:3]) + [1] * ndim
        shape[3 + axis] = k_grid[axis]
        term = term.reshape(shape)
        bias = term if bias is None else bias + term
    assert bias is not None
    return bias.flatten(3)


def one_hot_positions(k_grid: Sequence[int], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """(N_k, sum(k_grid)): for each key the concatenated one-hot codes of its coordinates."""
    codes = []
    for axis, size in enumerate(k_grid):
        coord = torch.arange(size, device=device)
        shape = [1] * len(k_grid)
        shape[axis] = size
        coord = coord.reshape(shape).expand(*k_grid).reshape(-1)
        codes.append(F.one_hot(coord, size))
    return torch.cat(codes, dim=1).to(dtype)


def padded_dim(dim: int, multiple: int = 8) -> int:
    return -(-dim // multiple) * multiple


def fold_into_qk(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    rel_terms: Sequence[torch.Tensor],
    k_grid: Sequence[int],
    scale: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Efficient path: (q', k', v') with ``q'.k'_j = scale * q.k_j + sum_axis term_axis[j_axis]``.

    q' = [scale * q, term_0, term_1, ...], k' = [k, onehot(j_0), onehot(j_1), ...], zero-padded to a
    multiple of 8 channels; v is zero-padded to the same width (CPU and CUDA flash kernels need equal
    q/k/v head sizes) and the caller slices the output back. Attend with ``scale=1``.
    """
    b, heads, n_k, dim = k.shape
    extra = sum(k_grid)
    width = padded_dim(dim + extra)
    pad = width - dim - extra
    q_parts = [q * scale, *[t.to(q.dtype) for t in rel_terms]]
    if pad:
        q_parts.append(q.new_zeros(*q.shape[:3], pad))
    positions = one_hot_positions(k_grid, k.device, k.dtype)
    positions = F.pad(positions, (0, pad)).expand(b, heads, n_k, extra + pad)
    q_folded = torch.cat(q_parts, dim=-1)
    k_folded = torch.cat([k, positions], dim=-1)
    v_folded = F.pad(v, (0, width - v.shape[-1]))
    return q_folded, k_folded, v_folded
