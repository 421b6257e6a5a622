"""Relative positions and attention: the bias-free (efficient) path equals the dense-bias reference."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from maskahand.afformer.attention import CrossAttention3d, SelfAttention2d
from maskahand.afformer.decoder import TemporalPyramid
from maskahand.afformer.relpos import gather_rel_pos, one_hot_positions, time_rows

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def test_gather_rel_pos_indexes_scaled_offsets():
    table = torch.arange(7.0)[:, None]  # row r holds value r
    # equal sizes: row = i - j + (n - 1)
    same = gather_rel_pos(4, 4, table)[..., 0]
    assert same.tolist() == [[3, 2, 1, 0], [4, 3, 2, 1], [5, 4, 3, 2], [6, 5, 4, 3]]
    # 4 queries over 2 keys: keys are stretched x2, row = i - 2j + 2
    stretched = gather_rel_pos(4, 2, table)[..., 0]
    assert stretched.tolist() == [[2, 0], [3, 1], [4, 2], [5, 3]]
    # 2 queries over 3 keys (a spatial axis, table learned for 4 positions): resized 7 -> 5 rows, i.e.
    # sampled at (r + 0.5) * 7 / 5 - 0.5 = 0.2, 1.6, 3.0, 4.4, 5.8; rows i*1.5 - j + 2 -> int
    resized = gather_rel_pos(2, 3, table)[..., 0]
    torch.testing.assert_close(resized, torch.tensor([[3.0, 1.6, 0.2], [4.4, 3.0, 1.6]]))


@pytest.mark.parametrize("clip", [8, 32])
def test_time_rows_follow_the_authors_rule_at_every_pyramid_level(clip):
    """Frame k of a level with T frames gets row T-1-k of the raw table (63 rows for 32-frame clips),
    never a resized table; levels T, T/2, T/4 each use their own T; padded clips use their own length."""
    table = torch.arange(63.0)[:, None].repeat(1, 2)  # row r holds r
    for frames in (clip, clip // 2, clip // 4):
        want = [float(frames - 1 - k) for k in range(frames)]
        assert time_rows(table, None, frames)[0, :, 0].tolist() == want  # every clip has `frames`
        assert time_rows(table, torch.tensor([frames]), frames)[0, :, 0].tolist() == want
    # a batch padded to `clip` frames: a 5-frame sample uses rows 4..0 for its frames, like alone
    rows = time_rows(table, torch.tensor([clip, 5]), clip)[..., 0]
    assert rows[0].tolist() == [float(clip - 1 - k) for k in range(clip)]
    assert rows[1, :5].tolist() == [4.0, 3.0, 2.0, 1.0, 0.0]
    for counts in (None, torch.tensor([64, 3])):
        with pytest.raises(ValueError, match=r"model\.max_kv_thw\[0\]"):
            time_rows(table, counts, 64)


def _frame_weights(attn: CrossAttention3d, frames: int, counts) -> torch.Tensor:
    """Attention weight of each frame, read from the output: values are one-hot frame codes."""
    dim = attn.proj.in_features
    x = torch.zeros(len(counts), 1, 1, dim)
    memory = torch.eye(dim)[:frames].reshape(1, frames, 1, 1, dim).repeat(len(counts), 1, 1, 1, 1)
    with torch.no_grad():
        return attn(x, memory, torch.tensor(counts))[:, 0, 0, :frames]


@pytest.mark.parametrize("mode", ["reference", "efficient"])
def test_cross_attention_weights_frames_by_their_time_row(mode):
    # same q for every query, k = 0, spatial tables 0: the logit of frame k is q . R_t[T-1-k] = 0.1 (T-1-k)^2
    # (quadratic in the row: a constant row offset would not change a softmax)
    dim, heads = 16, 1
    attn = CrossAttention3d(dim, heads, (1, 4, 4), (8, 4, 4), mode=mode)
    with torch.no_grad():
        for p in attn.parameters():
            p.zero_()
        u = torch.zeros(dim)
        u[0] = 1.0
        attn.q_proj.bias.copy_(u * dim**0.5)  # q . R_t[r] = sqrt(d) * R_t[r, 0]; k = 0: no content term
        attn.v_proj.weight.copy_(torch.eye(dim))
        attn.proj.weight.copy_(torch.eye(dim))
        attn.rel_pos_t[:, 0] = 0.1 * torch.arange(15.0) ** 2 / dim**0.5
    got = _frame_weights(attn, 8, [8, 5])
    for row, n in zip(got, (8, 5)):
        logits = torch.tensor([0.1 * (n - 1 - k) ** 2 for k in range(n)])
        want = torch.cat([logits.softmax(0), torch.zeros(8 - n)])
        torch.testing.assert_close(row, want, atol=1e-6, rtol=1e-5)


def test_one_hot_positions_encode_each_axis():
    codes = one_hot_positions((2, 1, 3), torch.device("cpu"), torch.float32)
    # key (t, y, x) = row t*3 + x: [onehot_t(2) | onehot_y(1) | onehot_x(3)]
    assert codes[4].tolist() == [0, 1, 1, 0, 1, 0]
    assert codes[2].tolist() == [1, 0, 1, 0, 0, 1]
    assert codes.sum(1).tolist() == [3.0] * 6


def _grads(module, inputs, weights):
    out = module(*inputs)
    (out * weights).sum().backward()
    return (
        out.detach(),
        [i.grad.clone() for i in inputs if torch.is_tensor(i) and i.requires_grad],
        {n: p.grad.clone() for n, p in module.named_parameters()},
    )


def _assert_same_forward_backward(ref_module, eff_module, make_inputs):
    torch.manual_seed(1)
    proto = make_inputs()
    weights = None
    results = []
    for module in (ref_module, eff_module):
        inputs = [
            t.detach().clone().requires_grad_(t.is_floating_point()) if torch.is_tensor(t) else t
            for t in proto
        ]
        if weights is None:
            with torch.no_grad():
                weights = torch.randn_like(module(*inputs))
        results.append(_grads(module, inputs, weights))
    (out_r, gin_r, gp_r), (out_e, gin_e, gp_e) = results
    torch.testing.assert_close(out_e, out_r, atol=2e-5, rtol=1e-4)
    assert len(gin_r) == len(gin_e) > 0
    for a, b in zip(gin_e, gin_r):
        torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-4)
    assert gp_r.keys() == gp_e.keys() and any(n.startswith("rel_pos") for n in gp_r)
    for name in gp_r:
        torch.testing.assert_close(gp_e[name], gp_r[name], atol=2e-5, rtol=1e-4, msg=name)


def _pair(cls, *args):
    torch.manual_seed(0)
    ref = cls(*args, mode="reference")
    eff = copy.deepcopy(ref)
    eff.mode = "efficient"
    return ref, eff


@pytest.mark.parametrize("counts", [None, [5, 2, 1]])
def test_cross_attention_efficient_equals_reference(counts):
    ref, eff = _pair(CrossAttention3d, 32, 2, (1, 8, 8), (4, 4, 4))
    counts_t = None if counts is None else torch.tensor(counts)
    # queries on a 6x6 grid attend to 5 frames of 3x4 tokens (tables are resized from 8 / 4 extents)
    _assert_same_forward_backward(
        ref, eff, lambda: [torch.randn(3, 6, 6, 32), torch.randn(3, 5, 3, 4, 32), counts_t]
    )


def test_cross_attention_ignores_padded_frames():
    torch.manual_seed(0)
    attn = CrossAttention3d(32, 2, (1, 8, 8), (4, 4, 4), mode="efficient")
    x, mem = torch.randn(1, 4, 4, 32), torch.randn(1, 3, 2, 2, 32)
    padded = torch.cat([mem, 100 * torch.randn(1, 2, 2, 2, 32)], dim=1)
    alone = attn(x, mem)
    in_batch = attn(x, padded, torch.tensor([3]))
    torch.testing.assert_close(in_batch, alone, atol=1e-5, rtol=1e-5)


def test_cross_attention_clips_up_to_the_table_length():
    # a 4-frame table extent has 7 rows: 7 frames work in both paths, 8 name the config key to raise
    ref, eff = _pair(CrossAttention3d, 16, 2, (1, 4, 4), (4, 4, 4))
    _assert_same_forward_backward(
        ref, eff, lambda: [torch.randn(2, 3, 3, 16), torch.randn(2, 7, 2, 2, 16), None]
    )
    with pytest.raises(ValueError, match=r"8 frames .*\(7 rows.*model\.max_kv_thw\[0\]"):
        eff(torch.randn(1, 3, 3, 16), torch.randn(1, 8, 2, 2, 16))


def test_efficient_path_runs_on_the_fused_flash_kernel():
    from torch.nn.attention import SDPBackend, sdpa_kernel

    torch.manual_seed(0)
    attn = CrossAttention3d(32, 2, (1, 8, 8), (4, 4, 4), mode="efficient")
    x = torch.randn(2, 4, 4, 32, requires_grad=True)
    with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):  # raises "No available kernel" if it cannot run
        attn(x, torch.randn(2, 3, 2, 2, 32), torch.tensor([3, 1])).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_self_attention_efficient_equals_reference():
    ref, eff = _pair(SelfAttention2d, 32, 2, (8, 8))
    _assert_same_forward_backward(ref, eff, lambda: [torch.randn(2, 5, 7, 32)])


def test_temporal_pyramid_lengths_and_padding():
    torch.manual_seed(0)
    pyramid = TemporalPyramid(8)
    for t in (1, 2, 3, 7, 32, 63, 64):
        levels = pyramid(torch.randn(1, 8, t, 1, 1), None)
        assert [v.shape[2] for v, _ in levels] == [t, math.ceil(t / 2), math.ceil(math.ceil(t / 2) / 2)]
    # a 5-frame clip padded to 8 gives the same first ceil(5/2), ceil(5/4) frames as alone
    clip = torch.randn(1, 8, 5, 2, 2)
    padded = torch.cat([clip, torch.randn(1, 8, 3, 2, 2)], dim=2)
    alone = pyramid(clip, None)
    batched = pyramid(padded, torch.tensor([5]))
    assert batched[1][1].tolist() == [3] and batched[2][1].tolist() == [2]
    for (a, _), (b, _) in zip(alone, batched):
        torch.testing.assert_close(b[:, :, : a.shape[2]], a, atol=1e-6, rtol=1e-5)
