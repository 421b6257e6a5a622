"""Training pairs for Interaction Hotspots: a demonstration clip, its verb, an inactive image (and a negative).

- ``opra``: the evaluation issue's OPRA reader (:func:`maskahand.evaluation.opra.read_opra`, Afformer's
  ``annotations/<split>.json``). Each (entry, distinct action) is one item: the entry's clip is the
  demonstration, the action its verb, the entry's product image the inactive image (seed 000 S4).
- ``epic_hotspots``: their ``annotations.json`` (``verbs``, ``nouns``, ``train_clips`` with ``v_id``,
  ``start``, ``stop``, ``verb``, ``noun``; ``inactive_images``: noun -> ``{v_id, f_id, box}``) over the
  EPIC-KITCHENS-55 layout (``frames_rgb_flow/rgb/train/P01/P01_01/frame_%010d.jpg`` and
  ``object_detection_images/train/P01/P01_01/%010d.jpg``). The inactive image is a box crop of an object of
  the clip's noun with their perturbation (box grown by U(0.5, 1.5) of its size, shifted by U(-0.2, 0.2));
  the negative is a crop of a random noun's object (triplet loss).

Their sampling and transforms: a random window of ``max_len`` frames (the middle one at evaluation), the
clip resized (shorter side ``resize``), one random ``crop`` x ``crop`` crop and one horizontal flip for
all its frames, zero-padded to ``max_len``; the inactive image resized, cropped and flipped on its own.
Their class-balancing sampler draws items with replacement, weight = (all items / items of the verb),
capped at ``weight_cap``. Every random draw comes from a generator seeded by (seed, epoch, item), so a
resumed run sees the same data.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..core.config import HotspotsDataConfig, VideoConfig
from ..evaluation.benchmark import AnnotationError, load_benchmark
from ..evaluation.epic import default_annotations
from ..video import open_video
from ..video.sampling import resize_uint8


class HotspotsDataError(ValueError):
    """Bad annotations or media; the message names the file."""


@dataclass(frozen=True)
class Item:
    key: str
    video: str  # video file, frame folder, or "" when ``frames`` lists the files
    verb: int
    inactive: str  # OPRA: image path; EPIC: the noun whose crops are drawn
    frames: tuple[str, ...] = ()  # EPIC: the clip's frame files


@dataclass
class TrainingSet:
    dataset: str
    verbs: list[str]
    items: list[Item]
    root: Path
    inactive_crops: dict[str, list[dict]] | None = None  # EPIC: noun -> [{v_id, f_id, box}]

    def sampling_weights(self, cap: float) -> np.ndarray:
        """Their ``data_sampler``: inverse verb frequency, capped."""
        counts: dict[int, int] = {}
        for it in self.items:
            counts[it.verb] = counts.get(it.verb, 0) + 1
        total = len(self.items)
        return np.array([min(total / counts[it.verb], cap) for it in self.items], dtype=np.float64)


def load_training_set(cfg: HotspotsDataConfig, root: str | Path) -> TrainingSet:
    root = Path(root)
    if cfg.dataset == "opra":
        return _opra(cfg, root)
    return _epic(cfg, root)


def _opra(cfg: HotspotsDataConfig, root: Path) -> TrainingSet:

    try:
        bench = load_benchmark("opra", cfg.annotations, root, split=cfg.split)
    except AnnotationError as err:
        raise HotspotsDataError(str(err)) from None
    items = []
    for e in bench.entries:
        if not e.video:
            raise HotspotsDataError(f"{bench.annotations}: {e.describe()} has no video")
        for a in e.distinct_actions:
            items.append(Item(f"{e.index}:{a}", str(bench.resolve(e.video)), a, str(bench.resolve(e.image))))
    return TrainingSet("opra", list(bench.action_names), items, root)


def _epic(cfg: HotspotsDataConfig, root: Path) -> TrainingSet:

    path = Path(cfg.annotations) if cfg.annotations else Path(default_annotations(root))
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise HotspotsDataError(f"{path}: annotation file not found") from None
    except json.JSONDecodeError as e:
        raise HotspotsDataError(f"{path}: not valid JSON ({e})") from None
    for key in ("verbs", "nouns", "train_clips", "inactive_images"):
        if key not in data:
            raise HotspotsDataError(f"{path}: missing key {key!r}")
    verbs, nouns = list(data["verbs"]), list(data["nouns"])
    clips = data["train_clips"] if cfg.split == "train" else data.get("test_clips", [])
    items = []
    for i, c in enumerate(clips):
        try:
            v_id, start, stop, verb, noun = (
                c["v_id"],
                int(c["start"]),
                int(c["stop"]),
                int(c["verb"]),
                int(c["noun"]),
            )
        except (KeyError, TypeError, ValueError):
            raise HotspotsDataError(f"{path}: clip {i} needs v_id, start, stop, verb, noun") from None
        if not (0 <= verb < len(verbs) and 0 <= noun < len(nouns)):
            raise HotspotsDataError(f"{path}: clip {i} has verb {verb} / noun {noun} out of range")
        if nouns[noun] not in data["inactive_images"]:
            raise HotspotsDataError(f"{path}: clip {i}: no inactive images of noun {nouns[noun]!r}")
        folder = root / "frames_rgb_flow" / "rgb" / "train" / v_id.split("_")[0] / v_id
        files = tuple(
            str(folder / f"frame_{f:010d}.jpg") for f in range(start, stop + 1, cfg.epic_sample_rate)
        )
        if not files:
            raise HotspotsDataError(f"{path}: clip {i} has no frames ({start}..{stop})")
        items.append(Item(f"{v_id}:{start}", "", verb, nouns[noun], files))
    return TrainingSet("epic_hotspots", verbs, items, root, dict(data["inactive_images"]))


# -- media ---------------------------------------------------------------------------------------------


def read_image(path: str | Path) -> torch.Tensor:
    """uint8 (3, H, W) RGB; errors name the file."""
    # deferred: torchvision at import
    from torchvision.io import ImageReadMode, decode_image

    path = Path(path)
    if not path.is_file():
        raise HotspotsDataError(f"image not found: {path}")
    try:
        return decode_image(
            torch.frombuffer(bytearray(path.read_bytes()), dtype=torch.uint8), ImageReadMode.RGB
        )
    except RuntimeError as e:
        raise HotspotsDataError(f"{path}: not a readable image ({e})") from None


def read_clip_frames(item: Item, fps: float) -> torch.Tensor:
    """All frames of an item's demonstration, uint8 (T, 3, H, W)."""
    if item.frames:
        return torch.stack([read_image(f) for f in item.frames])

    reader = open_video(item.video, VideoConfig(fps=fps))
    batches = [b.frames for b in reader.batches(16)]
    if not batches:
        raise HotspotsDataError(f"{item.video}: no decodable frames")
    return torch.cat(batches)


def window(n: int, max_len: int, rng: np.random.Generator | None) -> tuple[int, int]:
    """Their ``sample``: all frames when they fit, else a random window (training) or the middle one."""
    if n <= max_len:
        return 0, n
    start = int(rng.integers(0, n - max_len)) if rng is not None else n // 2 - max_len // 2
    return start, start + max_len


def resize_shorter(images: torch.Tensor, size: int) -> torch.Tensor:

    h, w = images.shape[-2:]
    if h <= w:
        return resize_uint8(images, max(1, round(w * size / h)), size)
    return resize_uint8(images, size, max(1, round(h * size / w)))


def crop_flip(images: torch.Tensor, crop: int, rng: np.random.Generator | None) -> torch.Tensor:
    """A random (or centre, without ``rng``) ``crop`` square and a coin-flip horizontal flip."""
    h, w = images.shape[-2:]
    if rng is None:
        y, x = (h - crop) // 2, (w - crop) // 2
    else:
        y, x = int(rng.integers(0, h - crop + 1)), int(rng.integers(0, w - crop + 1))
    out = images[..., y : y + crop, x : x + crop]
    if rng is not None and rng.random() < 0.5:
        out = out.flip(-1)
    return out.contiguous()


def perturbed_box(box, width: int, height: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """Their ``CropPerturb``: grow the box by U(0.5, 1.5) of its size (clipped to the image), then shift it by
    U(-0.2, 0.2) of the grown size."""
    x0, y0, x1, y1 = (float(v) for v in box)
    expand = rng.uniform(0.5, 1.5)
    dx, dy = int((x1 - x0) * expand) // 2, int((y1 - y0) * expand) // 2
    x0, y0 = max(x0 - min(dx, x0), 0), max(y0 - min(dy, y0), 0)
    x1, y1 = min(x1 + min(dx, width - x1), width - 1), min(y1 + min(dy, height - y1), height - 1)
    tx, ty = rng.uniform(-0.2, 0.2) * (x1 - x0), rng.uniform(-0.2, 0.2) * (y1 - y0)
    return int(x0 + tx), int(y0 + ty), int(x1 + tx), int(y1 + ty)


def crop_box(image: torch.Tensor, box: tuple[int, int, int, int]) -> torch.Tensor:
    """PIL-style crop: parts of the box outside the image are black."""
    x0, y0, x1, y1 = box
    out = torch.zeros(3, max(1, y1 - y0), max(1, x1 - x0), dtype=image.dtype)
    h, w = image.shape[-2:]
    sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if sx1 > sx0 and sy1 > sy0:
        out[:, sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = image[:, sy0:sy1, sx0:sx1]
    return out


class HotspotsSamples(torch.utils.data.Dataset):
    """Item ``i`` of an epoch's draw -> one training sample (uint8 tensors)."""

    def __init__(
        self, tset: TrainingSet, cfg: HotspotsDataConfig, max_len: int, seed: int, train: bool = True
    ):
        self.tset, self.cfg, self.max_len, self.seed, self.train = tset, cfg, max_len, seed, train
        self.order: list[int] = list(range(len(tset.items)))
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.order)

    def _image(self, img: torch.Tensor, rng) -> torch.Tensor:
        return crop_flip(resize_shorter(img, self.cfg.resize), self.cfg.crop, rng)

    def _epic_crop(self, noun: str, rng: np.random.Generator) -> torch.Tensor:
        assert self.tset.inactive_crops is not None, "EPIC training sets hold inactive crops"
        crops = self.tset.inactive_crops[noun]
        c = crops[int(rng.integers(len(crops)))]
        v_id, f_id = c["v_id"], int(c["f_id"])
        path = (
            self.tset.root
            / "object_detection_images"
            / "train"
            / v_id.split("_")[0]
            / v_id
            / f"{f_id:010d}.jpg"
        )
        img = read_image(path)
        return crop_box(img, perturbed_box(c["box"], img.shape[-1], img.shape[-2], rng))

    def __getitem__(self, pos: int) -> dict:
        index = self.order[pos]
        item = self.tset.items[index]
        rng = np.random.default_rng([self.seed, self.epoch, pos, index]) if self.train else None
        frames = read_clip_frames(item, self.cfg.fps)
        a, b = window(len(frames), self.max_len, rng)
        clip = crop_flip(resize_shorter(frames[a:b], self.cfg.resize), self.cfg.crop, rng)
        padded = torch.zeros(self.max_len, *clip.shape[1:], dtype=torch.uint8)
        padded[: len(clip)] = clip
        sample = {"key": item.key, "frames": padded, "length": len(clip), "verb": item.verb}
        if self.tset.inactive_crops is None:
            sample["inactive"] = self._image(read_image(item.inactive), rng)
        else:
            crng = rng or np.random.default_rng([self.seed, index])
            nouns = sorted(self.tset.inactive_crops)
            sample["inactive"] = self._image(self._epic_crop(item.inactive, crng), rng)
            negative = nouns[int(crng.integers(len(nouns)))]  # theirs: any noun, possibly the same
            sample["negative"] = self._image(self._epic_crop(negative, crng), rng)
        return sample


def collate(samples: list[dict]) -> dict:
    out = {
        "key": [s["key"] for s in samples],
        "frames": torch.stack([s["frames"] for s in samples]),
        "lengths": torch.tensor([s["length"] for s in samples]),
        "verbs": torch.tensor([s["verb"] for s in samples]),
        "inactive": torch.stack([s["inactive"] for s in samples]),
    }
    if "negative" in samples[0]:
        out["negative"] = torch.stack([s["negative"] for s in samples])
    return out


def epoch_order(tset: TrainingSet, cfg: HotspotsDataConfig, seed: int, epoch: int) -> list[int]:
    """This epoch's draw over all items (the same on every rank): weighted with replacement, or a shuffle."""
    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    n = len(tset.items)
    if cfg.balance:
        w = torch.as_tensor(tset.sampling_weights(cfg.weight_cap))
        return torch.multinomial(w, n, replacement=True, generator=g).tolist()
    return torch.randperm(n, generator=g).tolist()


def steps_per_epoch(num_items: int, global_batch: int) -> int:
    """Optimiser steps in one pass over ``num_items`` at ``global_batch`` samples a step (any process count)."""
    return max(1, math.ceil(num_items / global_batch))
