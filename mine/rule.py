"""The paper's clip-mining rule as pure functions over per-frame hand detections.

Seed 002, section 4.2: frames sampled at 5 fps; clips of 32 consecutive sampled frames; 16 sampled frames
between the starts of successive clips; a clip is kept when at least one of its frames has a hand in
contact with score >= 0.99. Positions below are indices into the *sampled* frame sequence of one video.

Choices this module makes (all in :class:`~maskahand.config.MineConfig`):

- ``unknown`` hands (detectors without a contact state, e.g. mediapipe) count as interacting under
  ``unknown_rule="score"`` when their score >= ``unknown_score``; ``"never"`` ignores them.
- Tail (``tail``): when the regular windows ``0, S, 2S, ...`` do not reach the last frame, ``"align_end"``
  adds one more full window ending at the last frame (so an interaction in the tail is never lost and
  every clip keeps ``clip_length`` frames; it overlaps its predecessor by more than ``L - S``);
  ``"drop"`` ignores the uncovered tail frames (what a plain ``range(0, n - L + 1, S)`` does).
- Videos shorter than one clip (``short_video``): ``"keep"`` makes one shorter clip of all ``n`` frames
  when ``n >= min_frames`` (the authors' supervised loader keeps short videos whole and Afformer accepts
  any number of frames); ``"drop"`` yields nothing. Either way the clip must still pass the rule.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from maskahand.config import MineConfig, MineRecipe, VideoConfig

RULE_NAME = "maskahand.clip_rule/1"


def _hand_field(hand: Any, name: str) -> Any:
    return hand[name] if isinstance(hand, dict) else getattr(hand, name)


@dataclass(frozen=True)
class HandRule:
    """When one hand counts as interacting: the part of the clip rule that later stages apply again.

    ``HandRule.from_record(meta["rule"])`` reads it from a clip, so ``synth`` needs no miner config.
    """

    contact_score: float
    unknown_rule: str
    unknown_score: float

    @classmethod
    def from_record(cls, record: Any) -> HandRule:
        """From a clip's ``meta["rule"]`` (:func:`rule_record`); keys it lacks take the paper's defaults."""
        rec = record if isinstance(record, dict) else {}
        return cls(
            contact_score=float(rec.get("contact_score", MineConfig.contact_score)),
            unknown_rule=str(rec.get("unknown_rule", MineConfig.unknown_rule)),
            unknown_score=float(rec.get("unknown_score", MineConfig.unknown_score)),
        )


def hand_interacts(hand: Any, cfg: MineConfig | HandRule) -> bool:
    """Does one hand (a ``Hand`` or a ``{box, state, score}`` dict) count as interacting?"""
    state = _hand_field(hand, "state")
    score = float(_hand_field(hand, "score"))
    if state == "contact":
        return score >= cfg.contact_score
    if state == "unknown" and cfg.unknown_rule == "score":
        return score >= cfg.unknown_score
    return False


def frame_interacts(hands: Iterable[Any], cfg: MineConfig) -> bool:
    return any(hand_interacts(h, cfg) for h in hands)


def interacting_mask(detections: Sequence[Iterable[Any]], cfg: MineConfig) -> list[bool]:
    """Per sampled frame: does any of its hands pass the rule?"""
    return [frame_interacts(hands, cfg) for hands in detections]


@dataclass(frozen=True)
class ClipSpan:
    """Sampled frames ``start .. stop - 1`` of one video; ``interacting``: positions inside the clip."""

    start: int
    stop: int
    interacting: tuple[int, ...]

    @property
    def length(self) -> int:
        return self.stop - self.start


def clip_windows(num_frames: int, cfg: MineConfig) -> list[tuple[int, int]]:
    """Candidate ``(start, stop)`` windows over ``num_frames`` sampled frames, before the rule."""
    length, stride = cfg.clip_length, cfg.clip_stride
    if num_frames < length:
        if cfg.short_video == "keep" and num_frames >= max(cfg.min_frames, 1):
            return [(0, num_frames)]
        return []
    windows = [(s, s + length) for s in range(0, num_frames - length + 1, stride)]
    if cfg.tail == "align_end" and windows[-1][1] < num_frames:
        windows.append((num_frames - length, num_frames))
    return windows


def select_clips(mask: Sequence[bool], cfg: MineConfig) -> list[ClipSpan]:
    """The kept clips of one video, given its per-frame interaction mask."""
    kept = []
    for start, stop in clip_windows(len(mask), cfg):
        inside = tuple(i - start for i in range(start, stop) if mask[i])
        if inside:
            kept.append(ClipSpan(start, stop, inside))
    return kept


def mining_video_config(recipe: MineRecipe, max_side: int | None = None) -> VideoConfig:
    """The reader config a miner uses: ``mine.fps``, and ``max_side`` (the decode size; None: source).

    Here, not beside the miner, so that planning a run (a resume over a million videos) imports no torch.
    """
    return dataclasses.replace(recipe.video, fps=recipe.mine.fps, max_side=max_side)


def rule_record(cfg: MineConfig) -> dict[str, Any]:
    """What is stored in every clip's ``meta["rule"]`` and in the run summary."""
    unknown = (
        f"unknown-state hands count when score >= {cfg.unknown_score}"
        if cfg.unknown_rule == "score"
        else "unknown-state hands never count"
    )
    return {
        "name": RULE_NAME,
        "fps": cfg.fps,
        "clip_length": cfg.clip_length,
        "clip_stride": cfg.clip_stride,
        "contact_score": cfg.contact_score,
        "unknown_rule": cfg.unknown_rule,
        "unknown_score": cfg.unknown_score,
        "tail": cfg.tail,
        "short_video": cfg.short_video,
        "min_frames": cfg.min_frames,
        "text": (
            f"keep a clip of {cfg.clip_length} frames at {cfg.fps:g} fps (stride {cfg.clip_stride}) if a frame "
            f"has a contact hand with score >= {cfg.contact_score}; {unknown}"
        ),
    }


class StreamingClipSelector:
    """:func:`select_clips` one frame at a time, holding at most ``clip_length`` frames.

    ``push(item, interacting)`` returns the clips completed by that frame as ``(span, items)``;
    ``finish()`` returns the tail or short-video clip. The spans equal ``select_clips`` over the whole
    mask (tested), so a video of any length is mined with bounded memory.
    """

    def __init__(self, cfg: MineConfig) -> None:
        self.cfg = cfg
        self.count = 0
        self._buffer: list[tuple[Any, bool]] = []  # the last clip_length frames
        self._next_start = 0
        self._last_stop = 0

    def _emit(self, start: int, stop: int) -> list[tuple[ClipSpan, list[Any]]]:
        first = self.count - len(self._buffer)
        window = self._buffer[start - first : stop - first]
        inside = tuple(i for i, (_, hit) in enumerate(window) if hit)
        self._last_stop = stop
        if not inside:
            return []
        return [(ClipSpan(start, stop, inside), [item for item, _ in window])]

    def push(self, item: Any, interacting: bool) -> list[tuple[ClipSpan, list[Any]]]:
        self._buffer.append((item, interacting))
        self.count += 1
        if len(self._buffer) > self.cfg.clip_length:
            self._buffer.pop(0)
        out = []
        if self.count == self._next_start + self.cfg.clip_length:
            out = self._emit(self._next_start, self.count)
            self._next_start += self.cfg.clip_stride
        return out

    def finish(self) -> list[tuple[ClipSpan, list[Any]]]:
        n, length = self.count, self.cfg.clip_length
        if n < length:
            if self.cfg.short_video == "keep" and n >= max(self.cfg.min_frames, 1):
                return self._emit(0, n)
            return []
        if self.cfg.tail == "align_end" and self._last_stop < n:
            return self._emit(n - length, n)
        return []
