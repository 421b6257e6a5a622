"""The clip rule on constructed per-frame detection sequences (no detector, no video)."""

from __future__ import annotations

from typing import Any

import pytest

from maskahand.core.config import MineConfig
from maskahand.mine.rule import (
    ClipSpan,
    StreamingClipSelector,
    clip_windows,
    hand_interacts,
    interacting_mask,
    select_clips,
)


def grid(**settings: Any) -> MineConfig:
    """The grid windows (these tests pin them; tests/test_mine_windows.py pins the authors' ones)."""
    return MineConfig(windows="grid", **settings)


CONTACT = {"box": [0, 0, 10, 10], "state": "contact", "score": 0.995}
WEAK_CONTACT = {"box": [0, 0, 10, 10], "state": "contact", "score": 0.98}
FREE = {"box": [0, 0, 10, 10], "state": "no_contact", "score": 0.999}
UNKNOWN = {"box": [0, 0, 10, 10], "state": "unknown", "score": 0.95}


def mask_with(n: int, hits: list[int]) -> list[bool]:
    return [i in hits for i in range(n)]


def test_hand_states_and_thresholds():
    cfg = grid()
    assert hand_interacts(CONTACT, cfg)
    assert not hand_interacts(WEAK_CONTACT, cfg)  # paper: >= 0.99
    assert not hand_interacts(FREE, cfg)
    assert hand_interacts(UNKNOWN, cfg)  # 0.95 >= unknown_score 0.9
    assert not hand_interacts(UNKNOWN, grid(unknown_rule="never"))
    assert not hand_interacts(UNKNOWN, grid(unknown_score=0.96))
    assert hand_interacts({**CONTACT, "score": 0.99}, cfg)  # the boundary counts
    frames = [[FREE], [], [FREE, WEAK_CONTACT], [FREE, CONTACT]]
    assert interacting_mask(frames, cfg) == [False, False, False, True]


def test_no_interaction_gives_no_clips():
    assert select_clips([False] * 100, grid()) == []


def test_interaction_only_in_first_frame():
    clips = select_clips(mask_with(64, [0]), grid())
    assert clips == [ClipSpan(0, 32, (0,))]


def test_interaction_only_in_last_frame_of_regular_windows():
    # 64 frames: windows start at 0, 16, 32; frame 63 is the last frame of the last window.
    clips = select_clips(mask_with(64, [63]), grid())
    assert clips == [ClipSpan(32, 64, (31,))]


def test_stride_overlap_puts_a_frame_in_two_clips():
    clips = select_clips(mask_with(64, [20]), grid())
    assert clips == [ClipSpan(0, 32, (20,)), ClipSpan(16, 48, (4,))]


def test_tail_align_end_keeps_an_interaction_in_the_last_frame():
    # 40 frames: regular windows [0, 32) only; the tail window [8, 40) covers frame 39.
    assert clip_windows(40, grid()) == [(0, 32), (8, 40)]
    assert select_clips(mask_with(40, [39]), grid()) == [ClipSpan(8, 40, (31,))]
    assert select_clips(mask_with(40, [39]), grid(tail="drop")) == []


def test_exactly_one_clip_long_video():
    assert clip_windows(32, grid()) == [(0, 32)]
    assert select_clips(mask_with(32, [31]), grid()) == [ClipSpan(0, 32, (31,))]


def test_just_longer_than_a_clip():
    assert clip_windows(33, grid()) == [(0, 32), (1, 33)]
    assert select_clips(mask_with(33, [0]), grid()) == [ClipSpan(0, 32, (0,))]
    assert select_clips(mask_with(33, [32]), grid()) == [ClipSpan(1, 33, (31,))]


def test_just_shorter_than_a_clip_is_one_short_clip_or_dropped():
    assert select_clips(mask_with(31, [30]), grid()) == [ClipSpan(0, 31, (30,))]
    assert select_clips(mask_with(31, [30]), grid(short_video="drop")) == []
    assert select_clips(mask_with(31, []), grid()) == []  # short clips must pass the rule too
    assert select_clips(mask_with(3, [1]), grid(min_frames=4)) == []
    assert select_clips(mask_with(4, [1]), grid(min_frames=4)) == [ClipSpan(0, 4, (1,))]
    assert select_clips([], grid()) == []


def test_stride_longer_than_clip_skips_frames():
    cfg = grid(clip_length=4, clip_stride=6, tail="drop")
    assert clip_windows(16, cfg) == [(0, 4), (6, 10), (12, 16)]
    assert select_clips(mask_with(16, [5]), cfg) == []


@pytest.mark.parametrize("n", [0, 3, 4, 31, 32, 33, 47, 48, 49, 64, 100, 161])
@pytest.mark.parametrize("tail", ["align_end", "drop"])
def test_streaming_selector_matches_whole_sequence_rule(n, tail):
    cfg = grid(tail=tail)
    hits = [i for i in range(n) if i % 23 == 7 or i == n - 1]
    mask = mask_with(n, hits)
    selector = StreamingClipSelector(cfg)
    streamed = []
    for i, hit in enumerate(mask):
        streamed += selector.push(f"frame{i}", hit)
    streamed += selector.finish()
    assert [span for span, _ in streamed] == select_clips(mask, cfg)
    for span, items in streamed:
        assert items == [f"frame{i}" for i in range(span.start, span.stop)]
