"""The two sample kinds that flow between stages, their schema strings, keys and validation.

A sample is a dataclass of torch tensors plus a JSON-serialisable ``meta`` dict whose ``schema``
names its kind and version. ``validate_*`` raise :class:`SchemaError` naming the shard (when known),
the sample key and the offending meta key, so a bad writer fails at the first bad sample.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass, field
from typing import Any, Literal, Union

import torch

CLIP_SCHEMA = "maskahand.clip/1"
MASKAHAND_SCHEMA = "maskahand.maskahand/1"
SCHEMAS = {"clip": CLIP_SCHEMA, "maskahand": MASKAHAND_SCHEMA}
KIND_OF_SCHEMA = {v: k for k, v in SCHEMAS.items()}
SampleKind = Literal["clip", "maskahand"]

HAND_STATES = ("contact", "no_contact", "unknown")
MAX_FRAMES = 1000  # member names use 3 digits (000.jpg ... 999.jpg)
MAX_TARGETS = 100  # t00.png ... t99.png
MAX_KEY_LENGTH = 80  # keeps every member name under tar's 100-character plain-name limit

CLIP_META_KEYS = (
    "schema",
    "video_id",
    "video_path",
    "fps",
    "frame_indices",
    "timestamps",
    "width",
    "height",
    "source_width",
    "source_height",
    "detections",
    "interacting",
    "rule",
    "detector",
)
MASKAHAND_META_KEYS = ("schema", "clip_key", "video_id", "size", "targets")
# Provenance of one synthesized target: position of the chosen frame in the clip, hand boxes and
# mask boxes (in that frame's stored pixels), 3x3 homography of the perspective distortion, crop
# (x1, y1, x2, y2 of the region resized to size x size), and the seed that reproduces it.
TARGET_KEYS = ("frame", "hand_boxes", "mask_boxes", "homography", "crop", "seed")

_KEY_RE = re.compile(r"^[A-Za-z0-9_-]+$")
_UNSAFE_RE = re.compile(r"[^A-Za-z0-9_-]+")


class SchemaError(ValueError):
    """A sample's tensors or meta break the shard contract."""

    def __init__(self, message: str, *, key: str | None = None, shard: str | None = None):
        self.key = key
        self.shard = shard
        where = ", ".join(p for p in (f"shard {shard}" if shard else "", f"sample {key}" if key else "") if p)
        super().__init__(f"{where}: {message}" if where else message)


@dataclass
class ClipSample:
    """Sampled frames of one mined clip: ``frames`` uint8 (T,3,H,W) RGB; ``meta`` per the clip schema."""

    key: str
    frames: torch.Tensor
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class MaskAHandSample:
    """A clip at S x S with K synthesized targets: frames uint8 (T,3,S,S), targets uint8 (K,3,S,S),
    heatmaps float32 (K,S,S) in [0, 1]."""

    key: str
    frames: torch.Tensor
    targets: torch.Tensor
    heatmaps: torch.Tensor
    meta: dict[str, Any] = field(default_factory=dict)


Sample = Union[ClipSample, MaskAHandSample]


def make_key(video_id: str, first_frame: int) -> str:
    """A WebDataset-safe, stable key for the clip of ``video_id`` starting at source frame ``first_frame``.

    Dots and slashes are not allowed in keys (WebDataset splits a member name at its first dot), so
    the id is sanitized and shortened; a hash of the full id keeps distinct ids distinct.
    """
    if first_frame < 0:
        raise ValueError(f"first_frame must be >= 0, got {first_frame}")
    digest = hashlib.sha1(video_id.encode("utf-8")).hexdigest()[:8]
    readable = _UNSAFE_RE.sub("_", video_id).strip("_")[:50] or "video"
    return f"{readable}_{digest}_{first_frame:010d}"


def check_key(key: Any, shard: str | None = None) -> None:
    if not isinstance(key, str) or not _KEY_RE.match(key) or len(key) > MAX_KEY_LENGTH:
        raise SchemaError(
            f"key {key!r} must be 1..{MAX_KEY_LENGTH} characters of [A-Za-z0-9_-] (no dots: use make_key)",
            shard=shard,
        )


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


class _Checker:
    def __init__(self, key: str | None, shard: str | None):
        self.key, self.shard = key, shard

    def fail(self, message: str) -> None:
        raise SchemaError(message, key=self.key, shard=self.shard)

    def require(self, meta: dict[str, Any], names: tuple[str, ...], where: str = "meta") -> None:
        if not isinstance(meta, dict):
            self.fail(f"{where} must be a dict, got {type(meta).__name__}")
        missing = [n for n in names if n not in meta]
        if missing:
            self.fail(f"{where} is missing key(s) {missing}")

    def box(self, box: Any, where: str) -> None:
        if not isinstance(box, (list, tuple)) or len(box) != 4 or not all(_is_number(v) for v in box):
            self.fail(f"{where}: a box must be 4 finite numbers (x1, y1, x2, y2), got {box!r}")
        if box[2] < box[0] or box[3] < box[1]:
            self.fail(f"{where}: box {list(box)} has x2 < x1 or y2 < y1")

    def tensor(self, t: Any, name: str, dtype: torch.dtype, ndim: int) -> None:
        if not isinstance(t, torch.Tensor):
            self.fail(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dtype != dtype or t.ndim != ndim:
            self.fail(f"{name} must be {dtype} with {ndim} dims, got {t.dtype} {tuple(t.shape)}")


def validate_clip_meta(
    meta: dict[str, Any],
    num_frames: int,
    height: int,
    width: int,
    key: str | None = None,
    shard: str | None = None,
) -> None:
    """Check a clip sample's meta against its frame tensor's T, H, W."""
    c = _Checker(key, shard)
    c.require(meta, CLIP_META_KEYS)
    if meta["schema"] != CLIP_SCHEMA:
        c.fail(f"meta.schema is {meta['schema']!r}, expected {CLIP_SCHEMA!r}")
    for name in ("video_id", "video_path"):
        if not isinstance(meta[name], str) or not meta[name]:
            c.fail(f"meta.{name} must be a non-empty string")
    if not _is_number(meta["fps"]) or meta["fps"] <= 0:
        c.fail(f"meta.fps must be a positive number, got {meta['fps']!r}")
    for name in ("width", "height", "source_width", "source_height"):
        if not _is_int(meta[name]) or meta[name] <= 0:
            c.fail(f"meta.{name} must be a positive int, got {meta[name]!r}")
    if (meta["height"], meta["width"]) != (height, width):
        c.fail(f"meta height x width {meta['height']}x{meta['width']} != frames {height}x{width}")
    for name, ok in (("frame_indices", _is_int), ("timestamps", _is_number), ("detections", None)):
        value = meta[name]
        if not isinstance(value, list) or len(value) != num_frames:
            got = len(value) if isinstance(value, list) else type(value).__name__
            c.fail(f"meta.{name} must be a list with one entry per frame (T={num_frames}), got {got}")
        if ok is not None and not all(ok(v) for v in value):
            c.fail(f"meta.{name} holds a value of the wrong type")
    for t, hands in enumerate(meta["detections"]):
        if not isinstance(hands, list):
            c.fail(f"meta.detections[{t}] must be a list of hands")
        for h, hand in enumerate(hands):
            where = f"meta.detections[{t}][{h}]"
            c.require(hand, ("box", "state", "score"), where)
            c.box(hand["box"], where + ".box")
            if hand["state"] not in HAND_STATES:
                c.fail(f"{where}.state {hand['state']!r} is not one of {list(HAND_STATES)}")
            if not _is_number(hand["score"]) or not 0.0 <= hand["score"] <= 1.0:
                c.fail(f"{where}.score must be a number in [0, 1], got {hand['score']!r}")
    inter = meta["interacting"]
    if not isinstance(inter, list) or not all(_is_int(i) and 0 <= i < num_frames for i in inter):
        c.fail(f"meta.interacting must be a list of frame positions in [0, {num_frames})")
    if not isinstance(meta["rule"], (str, dict)):
        c.fail("meta.rule must be a string or a dict")
    c.require(meta["detector"], ("name", "version"), "meta.detector")
    if not all(isinstance(meta["detector"][n], str) for n in ("name", "version")):
        c.fail("meta.detector name and version must be strings")


def validate_maskahand_meta(
    meta: dict[str, Any],
    num_frames: int,
    num_targets: int,
    size: int,
    key: str | None = None,
    shard: str | None = None,
) -> None:
    """Check a maskahand sample's meta against T, K and S of its tensors."""
    c = _Checker(key, shard)
    c.require(meta, MASKAHAND_META_KEYS)
    if meta["schema"] != MASKAHAND_SCHEMA:
        c.fail(f"meta.schema is {meta['schema']!r}, expected {MASKAHAND_SCHEMA!r}")
    for name in ("clip_key", "video_id"):
        if not isinstance(meta[name], str) or not meta[name]:
            c.fail(f"meta.{name} must be a non-empty string")
    # the source clip shard's file name (written by synth since provenance named its source)
    shard_name = meta.get("clip_shard", "x.tar")
    if not isinstance(shard_name, str) or not shard_name.endswith(".tar") or "/" in shard_name:
        c.fail(f"meta.clip_shard must be a shard file name (NAME.tar), got {shard_name!r}")
    if meta["size"] != size:
        c.fail(f"meta.size {meta['size']!r} != tensor size {size}")
    targets = meta["targets"]
    if not isinstance(targets, list) or len(targets) != num_targets:
        got = len(targets) if isinstance(targets, list) else type(targets).__name__
        c.fail(f"meta.targets must be a list with one provenance per target (K={num_targets}), got {got}")
    for k, prov in enumerate(targets):
        where = f"meta.targets[{k}]"
        c.require(prov, TARGET_KEYS, where)
        if not _is_int(prov["frame"]) or not 0 <= prov["frame"] < num_frames:
            c.fail(f"{where}.frame must be a frame position in [0, {num_frames}), got {prov['frame']!r}")
        for name in ("hand_boxes", "mask_boxes"):
            if not isinstance(prov[name], list):
                c.fail(f"{where}.{name} must be a list of boxes")
            for b, box in enumerate(prov[name]):
                c.box(box, f"{where}.{name}[{b}]")
        hom = prov["homography"]
        if not (
            isinstance(hom, list)
            and len(hom) == 3
            and all(isinstance(r, list) and len(r) == 3 and all(_is_number(v) for v in r) for r in hom)
        ):
            c.fail(f"{where}.homography must be a 3x3 list of finite numbers")
        c.box(prov["crop"], f"{where}.crop")
        if not _is_int(prov["seed"]):
            c.fail(f"{where}.seed must be an int")


def validate_sample(sample: Sample, shard: str | None = None) -> None:
    """Check a typed sample (tensors and meta); raises :class:`SchemaError`."""
    check_key(sample.key, shard)
    c = _Checker(sample.key, shard)
    if isinstance(sample, ClipSample):
        c.tensor(sample.frames, "frames", torch.uint8, 4)
        t, ch, h, w = sample.frames.shape
        if ch != 3 or not 1 <= t <= MAX_FRAMES:
            c.fail(f"frames must be (T,3,H,W) with 1 <= T <= {MAX_FRAMES}, got {tuple(sample.frames.shape)}")
        validate_clip_meta(sample.meta, t, h, w, sample.key, shard)
    elif isinstance(sample, MaskAHandSample):
        c.tensor(sample.frames, "frames", torch.uint8, 4)
        c.tensor(sample.targets, "targets", torch.uint8, 4)
        c.tensor(sample.heatmaps, "heatmaps", torch.float32, 3)
        t, ch, s, s2 = sample.frames.shape
        if ch != 3 or s != s2 or not 1 <= t <= MAX_FRAMES:
            c.fail(f"frames must be (T,3,S,S), got {tuple(sample.frames.shape)}")
        k = sample.targets.shape[0]
        if tuple(sample.targets.shape) != (k, 3, s, s) or not 1 <= k <= MAX_TARGETS:
            c.fail(
                f"targets must be (K,3,{s},{s}) with 1 <= K <= {MAX_TARGETS}, got {tuple(sample.targets.shape)}"
            )
        if tuple(sample.heatmaps.shape) != (k, s, s):
            c.fail(f"heatmaps must be (K,S,S) = ({k},{s},{s}), got {tuple(sample.heatmaps.shape)}")
        lo, hi = float(sample.heatmaps.min()), float(sample.heatmaps.max())
        if not (lo >= 0.0 and hi <= 1.0):
            c.fail(f"heatmaps must lie in [0, 1], got [{lo:.4g}, {hi:.4g}]")
        validate_maskahand_meta(sample.meta, t, k, s, sample.key, shard)
    else:
        raise SchemaError(f"not a ClipSample or MaskAHandSample: {type(sample).__name__}", shard=shard)
