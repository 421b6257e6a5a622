"""Backend ``precomputed``: detections computed elsewhere, looked up by video id and frame number.

Formats
- ``epic``: the EPIC-KITCHENS-100 hand-object release, one pickle per video (``P01_01.pkl``) holding
  a list of serialized ``Detections`` protobuf messages (``epic_proto``). Coordinates are normalized;
  frame numbers 1-based. The pickle is read by an unpickler that resolves no class or function at
  all, so the only thing a file can yield is plain data; anything but a list of bytes is refused.
- ``jsonl``: our own format, one line per frame that any external detector can write::

      {"video": "P01_01", "frame": 1, "width": 456, "height": 256,
       "hands": [{"box": [x1, y1, x2, y2], "state": "contact", "score": 0.98}]}

  boxes in pixels of a ``width`` x ``height`` frame; a frame without hands has ``"hands": []``.

Boxes are stored normalized and scaled to the pixels of the frame handed to ``detect``, so frames
resized by the video reader get boxes in their own pixels.

Frame numbers: the video reader gives EPIC frame folders the file-name number (1-based, as the
files) and video files the 0-based decode index. ``precomputed.frame_offset`` is added to the
reader's index before the lookup; ``null`` (default) means +1 when the video id names a video file
(``P01_01.MP4``: decode index 0 is EPIC frame 1) and +0 otherwise (frame folders, bare ids).
"""

from __future__ import annotations

import io
import json
import pickle
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, cast

import torch

from ..core.config import DetectorConfig, PrecomputedConfig
from ..core.fsutil import atomic_write_bytes, atomic_write_text
from ..runtime.weights import PICKLE_ERRORS, RestrictedUnpickler
from .base import HAND_STATES, DetectionsFileError, Hand, HandDetector, HandState

VIDEO_SUFFIXES = {".mp4", ".mkv", ".avi", ".mov", ".webm", ".m4v", ".mpg", ".mpeg"}
SUFFIX_FORMAT = {".pkl": "epic", ".pickle": "epic", ".jsonl": "jsonl"}

# per video: frame number -> list of (normalized box, state, score)
NormHand = tuple[tuple[float, float, float, float], str, float]
VideoDetections = dict[int, list[NormHand]]


def load_bytes_list_pickle(path: str | Path) -> list[bytes]:
    """A pickled ``list[bytes]``, read without resolving any global (no code can run)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise DetectionsFileError(f"{path}: cannot read detections file: {e}") from e
    try:
        obj = RestrictedUnpickler(io.BytesIO(data), accepts="a list of bytes").load()
    except PICKLE_ERRORS as e:
        raise DetectionsFileError(
            f"{path}: not an EPIC-KITCHENS detections pickle (expected a list of serialized protobuf "
            f"Detections): {e}"
        ) from e
    if not isinstance(obj, list) or not all(isinstance(x, bytes) for x in obj):
        kind = type(obj).__name__ if not isinstance(obj, list) else "list with non-bytes items"
        raise DetectionsFileError(f"{path}: expected a pickled list of bytes, got a {kind}")
    return obj


def read_epic(path: str | Path, contact_states: Iterable[int]) -> dict[str, VideoDetections]:
    # deferred: google at import
    from google.protobuf.message import DecodeError

    # deferred: google at import
    from .epic_proto import Detections

    contact = set(contact_states)
    videos: dict[str, VideoDetections] = {}
    for i, blob in enumerate(load_bytes_list_pickle(path)):
        try:
            msg = Detections.FromString(blob)
        except DecodeError as e:
            raise DetectionsFileError(f"{path}: item {i} is not a serialized Detections message: {e}") from e
        hands = []
        for h in msg.hands:
            b = h.bbox
            state = "contact" if int(h.state) in contact else "no_contact"
            hands.append(((b.top_left_x, b.top, b.right, b.bottom), state, float(h.score)))
        videos.setdefault(msg.video_id or Path(path).stem, {})[int(msg.frame_number)] = hands
    return videos


def read_jsonl(path: str | Path) -> dict[str, VideoDetections]:
    path = Path(path)
    videos: dict[str, VideoDetections] = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DetectionsFileError(f"{path}: cannot read detections file: {e}") from e
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            w, h = float(rec["width"]), float(rec["height"])
            if w <= 0 or h <= 0:
                raise ValueError("width and height must be > 0")
            hands = []
            for hand in rec["hands"]:
                x1, y1, x2, y2 = (float(v) for v in hand["box"])
                if hand["state"] not in HAND_STATES:
                    raise ValueError(f"state {hand['state']!r} is not one of {HAND_STATES}")
                hands.append(((x1 / w, y1 / h, x2 / w, y2 / h), hand["state"], float(hand["score"])))
            videos.setdefault(str(rec["video"]), {})[int(rec["frame"])] = hands
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            raise DetectionsFileError(
                f"{path}: line {n} is not a detections record {{video, frame, width, height, hands: "
                f"[{{box, state, score}}]}}: {e}"
            ) from e
    return videos


def write_epic(path: str | Path, messages: Sequence[Any]) -> None:
    """Write ``Detections`` messages as the EPIC release does: a pickled list of serialized bytes."""

    atomic_write_bytes(path, pickle.dumps([m.SerializeToString() for m in messages]))


def write_jsonl(path: str | Path, records: Iterable[dict[str, Any]]) -> None:

    atomic_write_text(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in records))


def video_key(video_id: str) -> str:
    """``P01/P01_01.MP4`` -> ``P01_01``; ``frames/P01_01`` -> ``P01_01``."""
    name = Path(video_id).name
    return Path(name).stem if Path(name).suffix.lower() in VIDEO_SUFFIXES else name


def default_frame_offset(video_id: str) -> int:
    return 1 if Path(video_id).suffix.lower() in VIDEO_SUFFIXES else 0


DETECTOR_BACKEND = {
    "name": "precomputed",
    "help": "detections read from a file (EPIC-KITCHENS-100 pickles or JSON lines: detector.precomputed.path)",
    "factory": "PrecomputedDetector",
    "detect_size": "stored",
}


class PrecomputedDetector(HandDetector):
    name = "precomputed"
    needs_video_id = True  # detections are looked up by video

    def __init__(self, cfg: DetectorConfig, cache_videos: int = 8) -> None:
        self.pcfg: PrecomputedConfig = cfg.precomputed
        self.batch_size = cfg.batch_size
        if not self.pcfg.path:
            raise DetectionsFileError(
                "the precomputed backend needs detector.precomputed.path=FILE_OR_FOLDER"
            )
        self.root = Path(self.pcfg.path)
        if not self.root.exists():
            raise DetectionsFileError(f"detector.precomputed.path {self.root} does not exist")
        self.version = f"{self.pcfg.format}:{self.root.name}"
        self._cache: OrderedDict[Path, dict[str, VideoDetections]] = OrderedDict()
        self._cache_videos = cache_videos
        self._files: dict[str, Path] | None = None

    def _format_of(self, path: Path) -> str:
        if self.pcfg.format != "auto":
            return self.pcfg.format
        fmt = SUFFIX_FORMAT.get(path.suffix.lower())
        if fmt is None:
            raise DetectionsFileError(
                f"{path}: cannot tell the format from the suffix (.pkl epic, .jsonl jsonl); "
                "set detector.precomputed.format"
            )
        return fmt

    def _file_for(self, key: str) -> Path:
        if self.root.is_file():
            return self.root
        if self._files is None:  # index the folder once: EPIC nests files as P01/P01_01.pkl
            self._files = {}
            for p in sorted(self.root.rglob("*")):
                if p.is_file() and p.suffix.lower() in SUFFIX_FORMAT:
                    self._files.setdefault(p.stem, p)
        if key not in self._files:
            raise DetectionsFileError(
                f"no detections file for video '{key}' under {self.root} (<id>.pkl/.jsonl)"
            )
        return self._files[key]

    def _load(self, path: Path) -> dict[str, VideoDetections]:
        if path in self._cache:
            self._cache.move_to_end(path)
            return self._cache[path]
        fmt = self._format_of(path)
        videos = read_epic(path, self.pcfg.contact_states) if fmt == "epic" else read_jsonl(path)
        self._cache[path] = videos
        while len(self._cache) > self._cache_videos:
            self._cache.popitem(last=False)
        return videos

    def video_detections(self, video_id: str) -> VideoDetections:
        key = video_key(video_id)
        path = self._file_for(key)
        videos = self._load(path)
        if key in videos:
            return videos[key]
        if video_id in videos:
            return videos[video_id]
        if self.root.is_file() and len(videos) == 1:
            return next(iter(videos.values()))  # one-video file named differently from the video
        raise DetectionsFileError(
            f"{path} holds no detections for video '{video_id}' (has {sorted(videos)[:5]})"
        )

    def _detect_batch(
        self, frames: list[torch.Tensor], *, video_id: str | None, frame_indices: list[int] | None
    ) -> list[list[Hand]]:
        if video_id is None or frame_indices is None:
            raise ValueError("the precomputed backend needs video_id and frame_indices")
        table = self.video_detections(video_id)
        offset = (
            self.pcfg.frame_offset if self.pcfg.frame_offset is not None else default_frame_offset(video_id)
        )
        out: list[list[Hand]] = []
        for frame, index in zip(frames, frame_indices):
            number = int(index) + offset
            if number not in table:
                if self.pcfg.on_missing == "error":
                    raise DetectionsFileError(
                        f"no detections for video '{video_id}' frame {number} (reader index {index} + offset "
                        f"{offset}); set detector.precomputed.on_missing=empty to treat it as no hands"
                    )
                out.append([])
                continue
            height, width = frame.shape[-2:]
            out.append([_to_pixels(box, state, score, width, height) for box, state, score in table[number]])
        return out


def _to_pixels(box: Sequence[float], state: str, score: float, width: int, height: int) -> Hand:
    x1, y1, x2, y2 = box
    clip_x = lambda v: min(max(v * width, 0.0), float(width))  # noqa: E731
    clip_y = lambda v: min(max(v * height, 0.0), float(height))  # noqa: E731
    box = (clip_x(x1), clip_y(y1), clip_x(x2), clip_y(y2))
    return Hand(box=box, state=cast(HandState, state), score=score)  # the state is checked by Hand
