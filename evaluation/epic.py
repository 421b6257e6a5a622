"""EPIC-Hotspots as the Interaction Hotspots release ships it, paired video-to-image.

Layout (their ``data/epic.py``: ``EPICInteractions``, ``EPICHeatmaps``, ``ImageLoader``; their
``utils/download_data.sh`` extracts ``data/epic/`` into their repository, we read it under ROOT)::

    ROOT/data/epic/annotations.json    one object:
        "verbs": [...], "nouns": [...]          class names; the integer "verb" / "noun" fields index them
        "train_clips", "test_clips": [{"v_id": "P01_01", "start": 16827, "stop": 16887,
                                       "verb": 0, "noun": 3}, ...]   # EPIC frame numbers, both inclusive
        "inactive_images": {"<noun name>": [{"v_id": ..., "f_id": ..., "box": [x1, y1, x2, y2]}, ...]}
        "train_images", "test_images": [{"image": ["P01_17_301_1084_92_1412_462...", ...],
                                         "verb": 0, "points": [[x, y], ...], "shape": [W, H]}, ...]
    ROOT/data/epic/images/<image[0]>   the annotated (inactive) object crops
    ROOT/frames_rgb_flow/rgb/train/<P01>/<P01_01>/frame_%010d.jpg    EPIC-KITCHENS-55 frames (60 fps)

``shape`` is (W, H): their ``compute_heatmap(..., transpose=True)`` fills an (shape[0], shape[1]) map at
[x, y] and transposes it, so a point (x, y) lands at row y, column x of an H x W map. An annotated
image's points (5 annotators, 1-2 points each) form one point list; one ``test_images`` item is one
(image, verb) pair -- their heatmap key is ``tuple(image) + (str(verb),)``. With ``--annotations`` the
images are read from ``images/`` beside that file.

Pairing (ours: the Hotspots model sees no video at test time, Afformer-style models do): every
``test_images`` item (image, verb) is paired with every ``test_clips`` clip of the same (noun, verb), in
file order; each pair is one :class:`Entry` whose video is the clip's frame folder with the clip's frame
range in ``extra`` (``start_frame`` / ``stop_frame``, inclusive; the evaluator reads only those frames).
The image's noun is its ``"noun"`` field when present (index or name), else an element of ``image``
that is a noun name, else the noun whose ``inactive_images`` crop the file is named after
(``<v_id>_<f_id>_<x1>_<y1>_<x2>_<y2>``, the naming their comment shows). Images whose (noun, verb) has
no test clip are left out (logged). All entries of one (image, verb) carry the same points, so the
28 x 28 ground truth of the pair (the union of its entries' points, each added once per entry) is
their single annotation map: the blur and normalisation are linear. Under the 256 rule each entry is
one map, so an image counts once per paired clip, as an OPRA image counts once per clip.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

from ..core import storage
from .benchmark import (
    AnnotationError,
    Benchmark,
    Entry,
    Location,
    load_json,
    parent_of,
    under,
)

log = logging.getLogger(__name__)

# The 20 EPIC-Hotspots verbs, in class order: supplement of Nagarajan et al. (ICCV 2019), table S2 ("the
# 20 most frequent verbs"); they are EPIC-KITCHENS-55 verb classes 0-19. Their code has no list of its own:
# it reads annotations.json["verbs"] and uses the entries' "verb" integers as indices into it, so the
# reader checks that the file's list starts with these.
EPIC_HOTSPOTS_VERBS = [
    "take", "put", "open", "close", "wash", "cut", "mix", "pour", "throw", "move",
    "remove", "dry", "turn-on", "turn", "shake", "turn-off", "peel", "adjust", "empty", "scoop",
]  # fmt: skip
DATASET = {
    "name": "epic_hotspots",
    "help": "EPIC-Hotspots (Interaction Hotspots release: ROOT/data/epic/annotations.json)",
    "reader": "read_epic_hotspots",
}
SPLITS = ("train", "test")
FRAMES_DIR = "frames_rgb_flow/rgb/train"  # their ImageLoader('rgb'): every clip, test ones too


def _norm(name: str) -> str:
    return name.strip().lower().replace("_", "-").replace(" ", "-")


def _index(value: object, names: list[str], what: str, where: str, limit: int | None = None) -> int:
    n = len(names) if limit is None else min(limit, len(names))
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < n:
        raise AnnotationError(f"{where}: unknown {what} {value!r} (0-based index, 0..{n - 1})")
    return value


def _crop_name(item: object) -> str | None:
    """``<v_id>_<f_id>_<x1>_<y1>_<x2>_<y2>`` of an inactive_images item, None when malformed."""
    if not isinstance(item, dict) or not {"v_id", "f_id", "box"} <= item.keys():
        return None
    box = item["box"]
    if not isinstance(box, list) or len(box) != 4 or not all(isinstance(v, (int, float)) for v in box):
        return None
    parts = [str(item["v_id"]), str(item["f_id"]), *(str(int(v)) for v in box)]
    return "_".join(parts)


def read_vocabulary(data: dict, path: Location) -> tuple[list[str], list[str]]:
    verbs, nouns = data["verbs"], data["nouns"]
    for key, names in (("verbs", verbs), ("nouns", nouns)):
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            raise AnnotationError(f"{path}: '{key}' must be a non-empty list of names")
    for i, (theirs, ours) in enumerate(zip(verbs, EPIC_HOTSPOTS_VERBS)):
        if _norm(theirs) != _norm(ours):
            raise AnnotationError(
                f"{path}: verbs[{i}] is {theirs!r}, expected {ours!r} (the EPIC-Hotspots verb order)"
            )
    return verbs, nouns


def parse_clip(raw: object, where: str, verbs: list[str], nouns: list[str]) -> dict:
    if not isinstance(raw, dict):
        raise AnnotationError(f"{where}: expected an object, got {type(raw).__name__}")
    missing = [k for k in ("v_id", "start", "stop", "verb", "noun") if k not in raw]
    if missing:
        raise AnnotationError(f"{where}: missing key(s) {', '.join(missing)}")
    v_id, start, stop = raw["v_id"], raw["start"], raw["stop"]
    where = f"{where} ({v_id} {start}-{stop})"
    if not isinstance(v_id, str) or "_" not in v_id:
        raise AnnotationError(f"{where}: 'v_id' must be an EPIC video id like 'P01_01'")
    if not (isinstance(start, int) and isinstance(stop, int) and 0 <= start <= stop):
        raise AnnotationError(f"{where}: 'start' / 'stop' must be frame numbers with start <= stop")
    return {
        "v_id": v_id,
        "start": start,
        "stop": stop,
        "verb": _index(raw["verb"], verbs, "verb", where),
        "noun": _index(raw["noun"], nouns, "noun", where),
    }


def image_noun(raw: dict, where: str, nouns: list[str], crops: dict[str, int]) -> int:
    """The noun of an annotated image (see the module docstring for the order of the rules)."""
    if "noun" in raw:
        noun = raw["noun"]
        if isinstance(noun, str):
            by_name = {_norm(n): i for i, n in enumerate(nouns)}
            if _norm(noun) not in by_name:
                raise AnnotationError(f"{where}: unknown noun {noun!r}")
            return by_name[_norm(noun)]
        return _index(noun, nouns, "noun", where)
    image = raw["image"]
    for part in image[1:]:
        if isinstance(part, str) and part in nouns:
            return nouns.index(part)
    stem = Path(image[0]).stem if Path(image[0]).suffix.lower() in (".jpg", ".jpeg", ".png") else image[0]
    if stem in crops:
        return crops[stem]
    raise AnnotationError(
        f"{where}: cannot tell the image's noun (no 'noun' key, no noun name in 'image', and no "
        f"inactive_images crop named {stem!r})"
    )


def parse_image(raw: object, where: str, verbs: list[str], nouns: list[str], crops: dict[str, int]) -> dict:
    if not isinstance(raw, dict):
        raise AnnotationError(f"{where}: expected an object, got {type(raw).__name__}")
    missing = [k for k in ("image", "verb", "points", "shape") if k not in raw]
    if missing:
        raise AnnotationError(f"{where}: missing key(s) {', '.join(missing)}")
    image = raw["image"]
    if not isinstance(image, list) or not image or not isinstance(image[0], str) or not image[0]:
        raise AnnotationError(f"{where}: 'image' must be a list whose first item is the file name")
    where = f"{where} ({image[0]})"
    shape = raw["shape"]
    if not (isinstance(shape, list) and len(shape) == 2 and all(isinstance(v, int) and v > 0 for v in shape)):
        raise AnnotationError(f"{where}: 'shape' must be [width, height], positive integers, got {shape!r}")
    # only the 20 benchmark verbs can be scored (a longer file list is EPIC's full verb list)
    verb = _index(raw["verb"], verbs, "verb", where, limit=len(EPIC_HOTSPOTS_VERBS))
    pts = raw["points"]
    try:
        points = tuple((float(p[0]), float(p[1])) for p in pts if len(p) == 2)
    except (TypeError, ValueError, IndexError):
        points = None
    if not isinstance(pts, list) or points is None or len(points) != len(pts):
        raise AnnotationError(f"{where}: 'points' must be a list of [x, y]")
    if not all(map(math.isfinite, sum(points, ()))):
        raise AnnotationError(f"{where}: 'points' must be finite")
    return {
        "file": image[0],
        "verb": verb,
        "noun": image_noun(raw, where, nouns, crops),
        "points": points,
        "width": shape[0],
        "height": shape[1],
    }


def _section(data: dict, key: str, path: Location) -> list:
    value = data[key]
    if not isinstance(value, list):
        raise AnnotationError(f"{path}: '{key}' must be a list, got {type(value).__name__}")
    return value


def default_annotations(root: Location) -> Location:
    """Where an EPIC-Hotspots root keeps its annotations: ROOT/data/epic/annotations.json as the release lays
    it out, else ROOT/annotations.json (the file copied to the root). The one default of ``eval`` and
    ``hotspots train``; a root with neither gets the release path, which the error then names."""
    release, copied = under(root, "data", "epic", "annotations.json"), under(root, "annotations.json")
    if not storage.exists(release) and storage.exists(copied):
        return copied
    return release


def _relative_prefix(images_dir: Location, root: Location | None) -> str | None:
    """``images_dir`` relative to ``root`` with a trailing ``/``; None when it is not under ``root`` (the
    image paths are then absolute paths or URLs)."""
    if root is None:
        return None
    if isinstance(images_dir, str) or isinstance(root, str):
        base = f"{str(root).rstrip('/')}/"
        rest = str(images_dir)
        return f"{rest[len(base) :]}/" if rest.startswith(base) else None
    try:
        return f"{images_dir.resolve().relative_to(root.resolve())}/"
    except ValueError:
        return None


def read_epic_hotspots(annotations: Location | None, root: Location | None, split: str = "test") -> Benchmark:
    """``annotations`` defaults to ROOT/data/epic/annotations.json (else ROOT/annotations.json)."""
    if split not in SPLITS:
        raise AnnotationError(f"epic_hotspots: unknown split {split!r} (train or test)")
    if annotations is None:
        if root is None:
            raise AnnotationError(
                "epic_hotspots: give the annotation file (--annotations) or the dataset root (--data)"
            )
        annotations = default_annotations(root)
    data = load_json(annotations)
    if not isinstance(data, dict):
        raise AnnotationError(f"{annotations}: expected an object, got {type(data).__name__}")
    clips_key, images_key = f"{split}_clips", f"{split}_images"
    missing = [k for k in ("verbs", "nouns", clips_key, images_key, "inactive_images") if k not in data]
    if missing:
        raise AnnotationError(f"{annotations}: missing key(s) {', '.join(missing)}")
    verbs, nouns = read_vocabulary(data, annotations)
    inactive = data["inactive_images"]
    if not isinstance(inactive, dict):
        raise AnnotationError(f"{annotations}: 'inactive_images' must map noun names to crop lists")
    crops = {}
    for noun, items in inactive.items():
        if noun in nouns and isinstance(items, list):
            crops.update({name: nouns.index(noun) for name in map(_crop_name, items) if name})

    clips = [
        parse_clip(raw, f"{annotations}: {clips_key}[{i}]", verbs, nouns)
        for i, raw in enumerate(_section(data, clips_key, annotations))
    ]
    by_action: dict[tuple[int, int], list[int]] = {}
    for i, c in enumerate(clips):
        by_action.setdefault((c["noun"], c["verb"]), []).append(i)

    images_dir = under(parent_of(annotations), "images")
    image_prefix = _relative_prefix(images_dir, root)
    images_abs = images_dir if isinstance(images_dir, str) else images_dir.resolve()
    entries: list[Entry] = []
    unpaired = 0
    raw_images = _section(data, images_key, annotations)
    for j, raw in enumerate(raw_images):
        im = parse_image(raw, f"{annotations}: {images_key}[{j}]", verbs, nouns, crops)
        if image_prefix is not None:
            image = f"{image_prefix}{im['file']}"
        else:
            image = str(under(images_abs, im["file"]))
        paired = by_action.get((im["noun"], im["verb"]), [])
        unpaired += not paired
        for ci in paired:
            c = clips[ci]
            entries.append(
                Entry(
                    index=len(entries),
                    image=image,
                    video=f"{FRAMES_DIR}/{c['v_id'].split('_')[0]}/{c['v_id']}",
                    width=im["width"],
                    height=im["height"],
                    actions=(im["verb"],),
                    points=(im["points"],),
                    extra={
                        "start_frame": c["start"],
                        "stop_frame": c["stop"],
                        "clip": ci,
                        "image_entry": j,
                        "noun": nouns[im["noun"]],
                    },
                )
            )
    if unpaired:
        log.warning(
            "epic_hotspots: %d of %d annotated (image, verb) pairs have no %s clip of their (noun, verb): "
            "left out",
            unpaired, len(raw_images), split,
        )  # fmt: skip
    if not entries:
        raise AnnotationError(
            f"{annotations}: no {images_key} item has a {clips_key} clip of its (noun, verb)"
        )
    return Benchmark(
        name="epic_hotspots",
        split=split,
        action_names=list(EPIC_HOTSPOTS_VERBS),
        entries=entries,
        annotations=annotations,
        root=root,
    )
