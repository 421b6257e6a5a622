"""OPRA in the layout the Afformer authors distribute.

    ROOT/annotations/{train,test}.json   a list of entries:
        {"image_path": "datasets/opra/images/<channel>/<playlist>/<video>/<id>.jpg",
         "video_path": "datasets/opra/clips/<channel>/<playlist>/<video>/<start>_<length>.mp4",
         "width": 256, "height": 256,            # the frame the points are given in
         "actions": [2],                          # 1-based: hold, touch, rotate, push, pull, pick up, put down
         "heatmaps": [[[x, y], ... 10 points]]}   # one point list per action
    ROOT/images/..., ROOT/clips/...

Stored paths start with ``datasets/opra/`` (relative to the authors' repository); they resolve against
ROOT with that prefix removed (absolute paths are used as they are).
"""

from __future__ import annotations

import math

from .benchmark import (
    AnnotationError,
    Benchmark,
    Entry,
    Location,
    load_json,
    under,
)

OPRA_ACTIONS = ["hold", "touch", "rotate", "push", "pull", "pick up", "put down"]
DATASET = {
    "name": "opra",
    "help": "OPRA (authors' layout: ROOT/annotations/SPLIT.json)",
    "reader": "read_opra",
}
REQUIRED = ("image_path", "video_path", "width", "height", "actions", "heatmaps")


def parse_entry(raw: object, index: int, path: Location, num_actions: int = len(OPRA_ACTIONS)) -> Entry:
    where = f"{path}: entry {index}"
    if not isinstance(raw, dict):
        raise AnnotationError(f"{where}: expected an object, got {type(raw).__name__}")
    missing = [k for k in REQUIRED if k not in raw]
    if missing:
        raise AnnotationError(f"{where}: missing key(s) {', '.join(missing)}")
    where = f"{where} ({raw['image_path']})"
    w, h = raw["width"], raw["height"]
    if not (isinstance(w, int) and isinstance(h, int) and w > 0 and h > 0):
        raise AnnotationError(f"{where}: width/height must be positive integers, got {w!r}/{h!r}")
    actions, heatmaps = raw["actions"], raw["heatmaps"]
    if not isinstance(actions, list) or not actions:
        raise AnnotationError(f"{where}: 'actions' must be a non-empty list")
    if not isinstance(heatmaps, list) or len(heatmaps) != len(actions):
        raise AnnotationError(f"{where}: 'heatmaps' must hold one point list per action ({len(actions)})")
    acts = []
    for a in actions:
        if not isinstance(a, int) or not 1 <= a <= num_actions:
            raise AnnotationError(f"{where}: unknown action {a!r} (1-based, 1..{num_actions})")
        acts.append(a - 1)
    point_lists = []
    for a, pts in zip(actions, heatmaps):
        try:
            parsed = tuple((float(p[0]), float(p[1])) for p in pts if len(p) == 2)
        except (TypeError, ValueError, IndexError):
            parsed = ()
        if not parsed or len(parsed) != len(pts) or not all(map(math.isfinite, sum(parsed, ()))):
            raise AnnotationError(f"{where}: the points of action {a} must be a list of finite [x, y]")
        point_lists.append(parsed)
    return Entry(
        index=index,
        image=str(raw["image_path"]),
        video=str(raw["video_path"]),
        width=w,
        height=h,
        actions=tuple(acts),
        points=tuple(point_lists),
    )


def read_opra(annotations: Location | None, root: Location | None, split: str = "test") -> Benchmark:
    """``annotations`` defaults to ROOT/annotations/<split>.json."""
    if annotations is None:
        if root is None:
            raise AnnotationError(
                "opra: give the annotation file (--annotations) or the dataset root (--data)"
            )
        annotations = under(root, "annotations", f"{split}.json")
    data = load_json(annotations)
    if not isinstance(data, list):
        raise AnnotationError(f"{annotations}: expected a list of entries, got {type(data).__name__}")
    entries = [parse_entry(raw, i, annotations) for i, raw in enumerate(data)]
    if not entries:
        raise AnnotationError(f"{annotations}: no entries")
    return Benchmark(
        name="opra",
        split=split,
        action_names=list(OPRA_ACTIONS),
        entries=entries,
        annotations=annotations,
        root=root,
        path_prefix="datasets/opra/",
    )
