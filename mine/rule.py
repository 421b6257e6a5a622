"""The paper's clip-mining rule as pure functions over per-frame hand detections.

Seed 002, section 4.2: frames sampled at 5 fps; clips of 32 consecutive sampled frames; 16 sampled frames
between the starts of successive clips; a clip is kept when at least one of its frames has a hand in
contact with score >= 0.99. Positions below are indices into the *sampled* frame sequence of one video.

Two ways to place the windows (``windows``):

- ``"authors"`` (default), the authors' released miner: an *event* opens ``clip_length - 1`` sampled
  frames before a contact frame (fewer at the start of the video) and closes after ``clip_length - 1``
  frames in a row without contact (or at the end of the video); inside each event, windows of
  ``clip_length`` start every ``clip_stride`` frames from the event's start, plus one ending at the
  event's end when the regular ones do not reach it. A hand counts when ``score > contact_score``
  (strictly, as their ``judge_contact``). Every window then holds a contact frame (an event never has
  ``clip_length`` contact-free frames in a row). An event may start inside the previous one's
  contact-free tail, as in their code (their frame queue is not cleared when a clip closes).
- ``"grid"``: windows ``0, S, 2S, ...`` over the whole video, a window kept when one of its frames
  counts with ``score >= contact_score`` (the paper's text, read literally).

Choices this module makes (all in :class:`~maskahand.core.config.MineConfig`):

- ``unknown`` hands (detectors without a contact state, e.g. mediapipe) count as interacting under
  ``unknown_rule="score"`` when their score >= ``unknown_score``; ``"never"`` ignores them.
- Tail (``tail``, grid windows only): when the regular windows ``0, S, 2S, ...`` do not reach the last frame, ``"align_end"``
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

from ..core.config import DetectorConfig, MineConfig, MineRecipe, VideoConfig
from ..core.plugins import DETECTOR_BACKENDS

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
    windows: str = "grid"

    @classmethod
    def from_record(cls, record: Any) -> HandRule:
        """From a clip's ``meta["rule"]`` (:func:`rule_record`); keys it lacks take the paper's defaults.

        A record without ``windows`` was written before the authors' windows existed: grid (``>=``).
        """
        rec = record if isinstance(record, dict) else {}
        return cls(
            contact_score=float(rec.get("contact_score", MineConfig.contact_score)),
            unknown_rule=str(rec.get("unknown_rule", MineConfig.unknown_rule)),
            unknown_score=float(rec.get("unknown_score", MineConfig.unknown_score)),
            windows=str(rec.get("windows", "grid")),
        )


def _passes(score: float, threshold: float, cfg: MineConfig | HandRule) -> bool:
    # the authors' miner and dataset filter compare strictly (score > 0.99); the paper's text reads >=
    return score > threshold if cfg.windows == "authors" else score >= threshold


def hand_interacts(hand: Any, cfg: MineConfig | HandRule) -> bool:
    """Does one hand (a ``Hand`` or a ``{box, state, score}`` dict) count as interacting?"""
    state = _hand_field(hand, "state")
    score = float(_hand_field(hand, "score"))
    if state == "contact":
        return _passes(score, cfg.contact_score, cfg)
    if state == "unknown" and cfg.unknown_rule == "score":
        return _passes(score, cfg.unknown_score, cfg)
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


def _short_video(num_frames: int, cfg: MineConfig) -> list[tuple[int, int]]:
    """A video shorter than one clip: one shorter window of all of it, or none (``short_video``)."""
    if cfg.short_video == "keep" and num_frames >= max(cfg.min_frames, 1):
        return [(0, num_frames)]
    return []


def clip_windows(num_frames: int, cfg: MineConfig) -> list[tuple[int, int]]:
    """Grid windows: candidate ``(start, stop)`` windows over ``num_frames`` sampled frames, before the rule."""
    length, stride = cfg.clip_length, cfg.clip_stride
    if num_frames < length:
        return _short_video(num_frames, cfg)
    windows = [(s, s + length) for s in range(0, num_frames - length + 1, stride)]
    if cfg.tail == "align_end" and windows[-1][1] < num_frames:
        windows.append((num_frames - length, num_frames))
    return windows


def interaction_events(mask: Sequence[bool], cfg: MineConfig) -> list[tuple[int, int]]:
    """The authors' events ``(start, stop)``: from ``clip_length - 1`` frames before a contact frame to
    ``clip_length - 1`` contact-free frames after the last one (or the video's end)."""
    side = cfg.clip_length - 1
    events, start, quiet = [], None, 0
    for pos, hit in enumerate(mask):
        if start is None:
            if hit:
                start, quiet = max(0, pos - side), 0
            continue
        quiet = 0 if hit else quiet + 1
        if quiet == side:
            events.append((start, pos + 1))
            start = None
    if start is not None:
        events.append((start, len(mask)))
    return events


def event_windows(start: int, stop: int, cfg: MineConfig) -> list[tuple[int, int]]:
    """The authors' windows inside one event: every ``clip_stride`` from its start, the last one aligned
    to its end. An event shorter than a clip only happens in a video shorter than one (``short_video``)."""
    length, stride = cfg.clip_length, cfg.clip_stride
    if stop - start < length:
        return [(start, start + w) for _, w in _short_video(stop - start, cfg)]
    starts = list(range(start, stop - length + 1, stride))
    if starts[-1] < stop - length:
        starts.append(stop - length)
    return [(s, s + length) for s in starts]


def candidate_windows(mask: Sequence[bool], cfg: MineConfig) -> list[tuple[int, int]]:
    """The windows ``cfg.windows`` places over one video's interaction mask, before the rule."""
    if cfg.windows == "authors":
        return [w for start, stop in interaction_events(mask, cfg) for w in event_windows(start, stop, cfg)]
    return clip_windows(len(mask), cfg)


def select_clips(mask: Sequence[bool], cfg: MineConfig) -> list[ClipSpan]:
    """The kept clips of one video, given its per-frame interaction mask."""
    kept = []
    for start, stop in candidate_windows(mask, cfg):
        inside = tuple(i - start for i in range(start, stop) if mask[i])
        if inside:
            kept.append(ClipSpan(start, stop, inside))
    return kept


def mining_video_config(recipe: MineRecipe, max_side: int | None = None) -> VideoConfig:
    """The reader config a miner uses: ``mine.fps``, ``max_side`` (the decode size; None: source), and as
    many decoder threads as the CPUs Ray gives each miner (``workers.cpus_per_decoder``) unless
    ``video.threads`` says otherwise: several miners already share the cores, and FFmpeg's default (a
    thread per core, each video) costs more to set up for a short video than it gains (measured:
    ``benchmarks/video_overhead.py --threads 1``).

    Here, not beside the miner, so that planning a run (a resume over a million videos) imports no torch.
    """
    threads = recipe.video.threads or max(1, round(recipe.workers.cpus_per_decoder))
    return dataclasses.replace(recipe.video, fps=recipe.mine.fps, max_side=max_side, threads=threads)


def rule_record(cfg: MineConfig, detector: DetectorConfig | None = None) -> dict[str, Any]:
    """What is stored in every clip's ``meta["rule"]`` and in the run summary.

    With the ``detector`` config it also says whether that detector judges contact at all (mediapipe
    does not: its hands are all ``unknown``, so "a hand is clearly visible" stands in for contact).
    """
    compare = ">" if cfg.windows == "authors" else ">="
    unknown = (
        f"unknown-state hands count when score {compare} {cfg.unknown_score}"
        if cfg.unknown_rule == "score"
        else "unknown-state hands never count"
    )
    if cfg.windows == "authors":
        text = (
            f"the authors' windows: an interaction event runs from {cfg.clip_length - 1} frames before a "
            f"frame with a contact hand of score > {cfg.contact_score} to {cfg.clip_length - 1} frames "
            f"without one; clips of {cfg.clip_length} frames at {cfg.fps:g} fps every {cfg.clip_stride} "
            f"frames inside it, the last aligned to its end; {unknown}"
        )
    else:
        text = (
            f"keep a clip of {cfg.clip_length} frames at {cfg.fps:g} fps (stride {cfg.clip_stride}) if a frame "
            f"has a contact hand with score >= {cfg.contact_score}; {unknown}"
        )
    record: dict[str, Any] = {
        "name": RULE_NAME,
        "windows": cfg.windows,
        "fps": cfg.fps,
        "clip_length": cfg.clip_length,
        "clip_stride": cfg.clip_stride,
        "contact_score": cfg.contact_score,
        "unknown_rule": cfg.unknown_rule,
        "unknown_score": cfg.unknown_score,
        "tail": cfg.tail,
        "short_video": cfg.short_video,
        "min_frames": cfg.min_frames,
        "text": text,
    }
    if detector is not None:
        backend = DETECTOR_BACKENDS.plugins().get(detector.backend)  # None: "auto" not yet resolved
        judged = bool(backend.options["contact_judged"]) if backend else True
        record["detector_backend"] = detector.backend
        record["contact_judged"] = judged
        if not judged:
            record["text"] += f"; contact is NOT judged: {detector.backend} sees hands, not their contact"
    return record


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
        # authors' windows: the open event's start (None: no event open) and its contact-free run so far
        self._event_start: int | None = None
        self._quiet = 0

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
        if self.cfg.windows == "authors":
            return self._push_event(interacting)
        out = []
        if self.count == self._next_start + self.cfg.clip_length:
            out = self._emit(self._next_start, self.count)
            self._next_start += self.cfg.clip_stride
        return out

    def _push_event(self, interacting: bool) -> list[tuple[ClipSpan, list[Any]]]:
        length, side, pos = self.cfg.clip_length, self.cfg.clip_length - 1, self.count - 1
        if self._event_start is None:
            if not interacting:
                return []
            self._event_start = self._next_start = max(0, pos - side)
            self._quiet = 0
        else:
            self._quiet = 0 if interacting else self._quiet + 1
        out = []
        if self.count == self._next_start + length:  # a regular window of the event is complete
            out = self._emit(self._next_start, self.count)
            self._next_start += self.cfg.clip_stride
        if self._quiet == side:  # the event closes here
            out += self._close_event()
        return out

    def _close_event(self) -> list[tuple[ClipSpan, list[Any]]]:
        start, stop, length = self._event_start, self.count, self.cfg.clip_length
        assert start is not None
        self._event_start = None
        if stop - start < length:  # only in a video shorter than one clip
            return self._emit(start, stop) if _short_video(stop - start, self.cfg) else []
        if self._last_stop < stop:  # the regular windows did not reach the event's end
            return self._emit(stop - length, stop)
        return []

    def finish(self) -> list[tuple[ClipSpan, list[Any]]]:
        n, length = self.count, self.cfg.clip_length
        if self.cfg.windows == "authors":
            return self._close_event() if self._event_start is not None else []
        if n < length:
            if self.cfg.short_video == "keep" and n >= max(self.cfg.min_frames, 1):
                return self._emit(0, n)
            return []
        if self.cfg.tail == "align_end" and self._last_stop < n:
            return self._emit(n - length, n)
        return []
