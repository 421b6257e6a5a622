"""AssistQ Buttons in the Afformer authors' ``data/assistq_button`` layout.

    ROOT/train.json, ROOT/test_v2.json   a list of entries:
        {"image_path": ".../image.jpg", "frames_path": ["...frame_0001.jpg", ...],
         "boxes": [[x1, y1, x2, y2], ...]}      # the buttons to press, in the image's own pixels

Ground truth (their ``boxes2heatmap``): the image resized to 256 x 256, each button box scaled with it and
filled with 1 (boxes summed), no blur; scored under the 256 rule only (there is one "press" action, so
top-1 is not defined here; the paper's button accuracy needs the button classes, which this layout
does not carry). The video is the entry's frame list, at most 64 frames uniformly sampled (theirs).
Paths are taken as written, relative to ROOT when not absolute (stored "datasets/assistq_button/" = ROOT).
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

DATASET = {
    "name": "assistq",
    "help": "AssistQ Buttons (ROOT/train.json, ROOT/test_v2.json)",
    "reader": "read_assistq",
}
GT_SIZE = 256
SPLIT_FILES = {"train": "train.json", "test": "test_v2.json"}


def parse_entry(raw: object, index: int, path: Location) -> Entry:
    where = f"{path}: entry {index}"
    if not isinstance(raw, dict):
        raise AnnotationError(f"{where}: expected an object")
    missing = [k for k in ("image_path", "frames_path", "boxes") if k not in raw]
    if missing:
        raise AnnotationError(f"{where}: missing key(s) {', '.join(missing)}")
    where = f"{where} ({raw['image_path']})"
    frames = raw["frames_path"]
    if not isinstance(frames, list) or not frames or not all(isinstance(f, str) for f in frames):
        raise AnnotationError(f"{where}: 'frames_path' must be a non-empty list of paths")
    raw_boxes = raw["boxes"]
    if not isinstance(raw_boxes, list):
        raise AnnotationError(f"{where}: 'boxes' must be a list of [x1, y1, x2, y2]")
    boxes = []
    for b in raw_boxes:
        ok = (
            isinstance(b, list)
            and len(b) == 4
            and all(isinstance(v, (int, float)) and math.isfinite(v) for v in b)
        )
        if not ok or b[2] < b[0] or b[3] < b[1]:
            raise AnnotationError(
                f"{where}: each box must be [x1, y1, x2, y2] with x1 <= x2, y1 <= y2, got {b!r}"
            )
        boxes.append((float(b[0]), float(b[1]), float(b[2]), float(b[3])))
    if not boxes:
        raise AnnotationError(f"{where}: no button boxes")
    return Entry(
        index=index,
        image=str(raw["image_path"]),
        video="",
        width=GT_SIZE,
        height=GT_SIZE,
        actions=(0,),
        points=((),),
        extra={"boxes": boxes, "frames": list(frames)},
    )


def read_assistq(annotations: Location | None, root: Location | None, split: str = "test") -> Benchmark:
    if annotations is None:
        if root is None:
            raise AnnotationError(
                "assistq: give the annotation file (--annotations) or the dataset root (--data)"
            )
        annotations = under(root, SPLIT_FILES.get(split, f"{split}.json"))
    data = load_json(annotations)
    if not isinstance(data, list) or not data:
        raise AnnotationError(f"{annotations}: expected a non-empty list of entries")
    return Benchmark(
        name="assistq",
        split=split,
        action_names=["press"],
        entries=[parse_entry(raw, i, annotations) for i, raw in enumerate(data)],
        annotations=annotations,
        root=root,
        path_prefix="datasets/assistq_button/",
        gt_rule="boxes",
    )


def box_map(boxes: list[tuple[float, float, float, float]], source_wh: tuple[int, int], size: int = GT_SIZE):
    """Their boxes2heatmap after their resize: boxes scaled to ``size``, truncated, filled with 1, summed."""
    # deferred: torch at import
    import torch

    w, h = source_wh
    out = torch.zeros(size, size, dtype=torch.float64)
    for x1, y1, x2, y2 in boxes:
        sx, sy = size / w, size / h
        a, b, c, d = int(x1 * sx), int(y1 * sy), int(x2 * sx), int(y2 * sy)
        out[max(b, 0) : d + 1, max(a, 0) : c + 1] += 1.0
    return out
