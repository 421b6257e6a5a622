"""Clip-rule behaviour that ``make mutate`` found unpinned (mutants of mine/rule.py that survived).

Each test names the promise; the expected values are written out by hand from the rule's definition.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from maskahand.core.config import MineConfig
from maskahand.detector.base import Hand
from maskahand.mine.rule import (
    RULE_NAME,
    HandRule,
    StreamingClipSelector,
    clip_windows,
    hand_interacts,
    rule_record,
    select_clips,
)


def grid(**settings: Any) -> MineConfig:
    """The grid windows (these tests pin them; tests/test_mine_windows.py pins the authors' ones)."""
    return MineConfig(windows="grid", **settings)


def streamed(mask: list[bool], cfg: MineConfig) -> list[tuple[int, int, tuple[int, ...]]]:
    selector = StreamingClipSelector(cfg)
    spans = [span for i, hit in enumerate(mask) for span, _ in selector.push(i, hit)]
    spans += [span for span, _ in selector.finish()]
    return [(s.start, s.stop, s.interacting) for s in spans]


def test_detector_hand_objects_are_judged_like_their_dicts():
    cfg = grid()
    hands = [
        Hand((0.0, 0.0, 5.0, 5.0), "contact", 0.995),
        Hand((0.0, 0.0, 5.0, 5.0), "contact", 0.98),
        Hand((0.0, 0.0, 5.0, 5.0), "unknown", 0.95),
        Hand((0.0, 0.0, 5.0, 5.0), "no_contact", 1.0),
    ]
    assert [hand_interacts(h, cfg) for h in hands] == [True, False, True, False]
    assert [hand_interacts(h.to_dict(), cfg) for h in hands] == [True, False, True, False]


def test_scores_equal_to_the_thresholds_count():
    cfg = grid(contact_score=0.99, unknown_score=0.9)
    assert hand_interacts({"state": "contact", "score": 0.99}, cfg)
    assert hand_interacts({"state": "unknown", "score": 0.9}, cfg)
    assert not hand_interacts({"state": "unknown", "score": 0.9}, replace(cfg, unknown_rule="never"))


def test_a_video_of_exactly_one_clip_is_a_regular_clip_even_when_short_videos_are_dropped():
    cfg = grid(clip_length=8, clip_stride=4, short_video="drop")
    assert clip_windows(8, cfg) == [(0, 8)]
    mask = [False] * 8
    mask[5] = True
    assert [(s.start, s.stop, s.interacting) for s in select_clips(mask, cfg)] == [(0, 8, (5,))]
    assert streamed(mask, cfg) == [(0, 8, (5,))]
    assert clip_windows(7, cfg) == []


def test_min_frames_one_keeps_a_one_frame_video():
    cfg = grid(clip_length=8, min_frames=1)
    assert clip_windows(1, cfg) == [(0, 1)]
    assert [(s.start, s.stop, s.interacting) for s in select_clips([True], cfg)] == [(0, 1, (0,))]
    assert streamed([True], cfg) == [(0, 1, (0,))]
    assert clip_windows(0, cfg) == []


def test_rule_record_holds_every_setting_and_a_readable_text():
    cfg = grid(
        fps=10.0,
        clip_length=16,
        clip_stride=8,
        contact_score=0.95,
        unknown_rule="score",
        unknown_score=0.8,
        tail="drop",
        short_video="drop",
        min_frames=3,
    )
    assert rule_record(cfg) == {
        "name": RULE_NAME,
        "windows": "grid",
        "fps": 10.0,
        "clip_length": 16,
        "clip_stride": 8,
        "contact_score": 0.95,
        "unknown_rule": "score",
        "unknown_score": 0.8,
        "tail": "drop",
        "short_video": "drop",
        "min_frames": 3,
        "text": "keep a clip of 16 frames at 10 fps (stride 8) if a frame has a contact hand with score "
        ">= 0.95; unknown-state hands count when score >= 0.8",
    }
    assert RULE_NAME == "maskahand.clip_rule/1"
    never = rule_record(replace(cfg, unknown_rule="never"))
    assert never["unknown_rule"] == "never" and never["text"].endswith("; unknown-state hands never count")


def test_hand_rule_reads_a_clip_record_and_defaults_missing_keys_to_the_paper():
    rec = rule_record(grid(contact_score=0.95, unknown_rule="never", unknown_score=0.7))
    assert HandRule.from_record(rec) == HandRule(
        contact_score=0.95, unknown_rule="never", unknown_score=0.7, windows="grid"
    )
    paper = HandRule(contact_score=0.99, unknown_rule="score", unknown_score=0.9)
    assert HandRule.from_record({}) == paper
    assert HandRule.from_record(None) == paper
    assert HandRule.from_record({"contact_score": "0.5"}) == replace(paper, contact_score=0.5)
    assert HandRule.from_record({"unknown_score": 1}).unknown_score == pytest.approx(1.0)
    rule = HandRule.from_record({"unknown_rule": "score", "unknown_score": 0.5})
    assert hand_interacts({"state": "unknown", "score": 0.6}, rule)
    assert not hand_interacts({"state": "contact", "score": 0.98}, rule)
