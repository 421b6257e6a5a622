"""What every benchmark reader returns, and the registry of readers.

A :class:`Benchmark` is a list of :class:`Entry` (one demonstration video paired with one target image,
with its annotated points per action); the evaluator, the ground-truth builder and the fine-tuning
data all read only this, so a new benchmark is one module with a reader function and its ``DATASET``
declaration (found by :data:`maskahand.core.plugins.DATASETS`: a module of this package or an entry point).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ..core import storage
from ..core.plugins import DATASETS, UnknownPluginError

#: A local file or folder (a Path), or an fsspec URL (a str such as ``s3://bucket/opra/test.json``).
Location = Path | str


class AnnotationError(ValueError):
    """Bad annotation file or entry; the message names the file and the entry."""


class MediaError(ValueError):
    """An entry's image or video is missing or unreadable; the message names the entry."""


Point = tuple[float, float]


@dataclass(frozen=True)
class Entry:
    index: int  # position in the annotation file: the id predictions are gathered and cached by
    image: str  # image path as written in the annotations (pairs are keyed by it)
    video: str  # video path (file or frame folder) as written, "" when the entry has none
    width: int  # the annotation frame the points live in
    height: int
    actions: tuple[int, ...]  # 0-based, one per point list (may repeat)
    points: tuple[tuple[Point, ...], ...]  # one point list per action above
    extra: dict = field(default_factory=dict, compare=False)  # reader-specific (e.g. frame range, boxes)

    @property
    def distinct_actions(self) -> list[int]:
        """Sorted distinct actions: the order of this entry's ground-truth maps and predictions."""
        return sorted(set(self.actions))

    def points_of(self, action: int) -> list[tuple[Point, ...]]:
        return [p for p, a in zip(self.points, self.actions) if a == action]

    def describe(self) -> str:
        return f"entry {self.index} ({self.image})"


@dataclass
class Benchmark:
    name: str
    split: str
    action_names: list[str]
    entries: list[Entry]
    annotations: Location  # the file the entries come from (ground-truth caches are keyed by its content)
    root: Location | None  # dataset root the image / video paths resolve against (None: annotations only)
    path_prefix: str = ""  # a prefix of the stored paths that stands for `root` (e.g. "datasets/opra/")
    gt_rule: str = (
        "points"  # "points": blurred annotated points (OPRA); "boxes": filled button boxes (AssistQ)
    )

    @property
    def num_actions(self) -> int:
        return len(self.action_names)

    def resolve(self, stored: str) -> Location:
        """A stored image / video path -> a file under ``root`` (a URL under a URL root)."""
        if self.root is None:
            raise AnnotationError(f"{self.annotations}: media paths need the dataset root (--data ROOT)")
        if storage.is_url(stored):
            return stored
        p = Path(stored)
        if p.is_absolute():
            return p
        if self.path_prefix and stored.startswith(self.path_prefix):
            stored = stored[len(self.path_prefix) :]
        return under(self.root, stored)

    def pairs(self) -> dict[tuple[str, int], list[int]]:
        """(image, action) -> indices of the entries annotating that action on that image, in file order.
        The 28 x 28 protocol scores one map per pair (the union of the pair's points)."""
        out: dict[tuple[str, int], list[int]] = {}
        for e in self.entries:
            for a in e.distinct_actions:
                out.setdefault((e.image, a), []).append(e.index)
        return out

    def num_maps(self) -> int:
        return sum(len(e.distinct_actions) for e in self.entries)


def location(path: str | Path) -> Location:
    """A command-line path: an fsspec URL stays a string (without a trailing ``/``), anything else is a
    local Path (``file://`` removed)."""
    if storage.is_url(str(path)):
        return str(path).rstrip("/")
    return storage.local_path(path) if isinstance(path, str) else path


def under(base: Location, *parts: str) -> Location:
    """``base/part/...``: a URL under a URL, a Path under a Path."""
    if isinstance(base, str):
        return storage.join(base, *parts)
    return base.joinpath(*parts)


def parent_of(path: Location) -> Location:
    return storage.parent(path) if isinstance(path, str) else path.parent


def load_json(path: Location) -> object:
    try:
        if isinstance(path, str):  # a URL
            text = storage.read_bytes(path).decode("utf-8")
        else:
            with open(path) as f:
                text = f.read()
        return json.loads(text)
    except FileNotFoundError:  # storage.ObjectNotFoundError too
        raise AnnotationError(f"{storage.redact(str(path))}: annotation file not found") from None
    except storage.StorageError as e:  # no bucket, no permission, unreachable endpoint
        raise AnnotationError(f"{e.url}: cannot read the annotation file ({e.reason})") from None
    except UnicodeDecodeError as e:
        raise AnnotationError(f"{path}: not valid JSON ({e})") from None
    except json.JSONDecodeError as e:
        raise AnnotationError(f"{path}: not valid JSON ({e})") from None


def load_benchmark(
    name: str, annotations: str | Path | None = None, root: str | Path | None = None, split: str = "test"
) -> Benchmark:
    """Read a benchmark by its registered name (``opra``, ``epic_hotspots``, ``assistq``, a plugin's)."""
    try:
        reader = DATASETS.load(name)  # reader(annotations: Location | None, root: Location | None, split)
    except UnknownPluginError as e:
        raise AnnotationError(str(e)) from None
    bench = reader(
        location(annotations) if annotations else None, location(root) if root else None, split=split
    )
    if not isinstance(bench, Benchmark):
        raise AnnotationError(
            f"dataset {name!r}: its reader returned {type(bench).__name__}, not a Benchmark"
        )
    return bench
