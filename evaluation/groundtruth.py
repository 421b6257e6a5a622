"""Ground truth of both protocols, computed once per annotation file and cached beside it.

Cache files are named ``<annotations stem>.gt<protocol>.<sha256 of the annotation file, 16 hex>.v<N>.npy``:
a changed annotation file (or a change of the rule here, which bumps ``GT_VERSION``) gives a new name,
so a stale cache is never read; stale siblings are reported and removed when the new one is written.
Files are written under a temporary name and renamed (atomic), and a file of the wrong size is rebuilt.
When the annotations' folder is not writable, or the annotations are an object behind a URL (a bucket
is never written into), the cache goes to ``cache_dir`` (default ``~/.cache/maskahand/gt``); the name
carries the content's digest, so two annotation objects of the same name never share a cache.

- 256 protocol: float32, every entry's maps (one per distinct action, sorted) in file order, flattened
  into one array (entries may differ in size); :meth:`GroundTruth.maps_256` slices an entry's maps.
- 28 protocol: float64 (P, 28, 28), one map per (image, action) pair in :meth:`Benchmark.pairs` order.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import numpy as np
import torch

from ..core import storage
from ..core.fsutil import atomic_path
from .assistq import box_map
from .benchmark import Benchmark, Location
from .clips import open_image_file
from .metrics import HOTSPOTS_RES, gt_map_28, gt_map_256

log = logging.getLogger(__name__)
GT_VERSION = 1
CHUNK = 64


def file_digest(path: Location) -> str:
    h = hashlib.sha256()
    with open(path, "rb") if isinstance(path, Path) else storage.open_input(path) as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def cache_folder(bench: Benchmark, cache_dir: str | Path | None) -> Path:
    if isinstance(bench.annotations, Path):
        here = bench.annotations.resolve().parent
        if cache_dir is None and os.access(here, os.W_OK):
            return here
    folder = Path(cache_dir) if cache_dir else Path.home() / ".cache" / "maskahand" / "gt"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def annotations_stem(bench: Benchmark) -> str:
    """The annotation file's name without its suffix (of a URL too)."""
    return Path(storage.name_of(bench.annotations)).stem


class GroundTruth:
    """Both protocols' ground truth of one benchmark (built or loaded lazily, per protocol)."""

    def __init__(self, bench: Benchmark, cache_dir: str | Path | None = None, progress: bool = True):
        self.bench = bench
        self.folder = cache_folder(bench, cache_dir)
        self.digest = file_digest(bench.annotations)
        self.progress = progress
        self._flat256: np.ndarray | None = None
        self._offsets: list[int] = []
        self._maps28: torch.Tensor | None = None
        self.pair_keys = list(bench.pairs())

    def path(self, protocol: str) -> Path:
        stem = annotations_stem(self.bench)
        return self.folder / f"{stem}.gt{protocol}.{self.digest}.v{GT_VERSION}.npy"

    # ---------------------------------------------------------------- 256
    def _layout(self) -> tuple[list[int], int]:
        offsets, total = [], 0
        for e in self.bench.entries:
            offsets.append(total)
            total += len(e.distinct_actions) * e.height * e.width
        return offsets, total

    def prepare_256(self) -> None:
        self._offsets, total = self._layout()
        path = self.path("256")
        self._flat256 = self._load_or_build(path, (total,), np.float32, self._fill_256)

    def _fill_256(self, out: np.ndarray) -> None:
        # deferred: tqdm at import
        from tqdm import tqdm

        entries = self.bench.entries
        for e in tqdm(entries, desc="ground truth 256", unit="entry", disable=not self.progress):
            if self.bench.gt_rule == "boxes":
                maps = self._box_maps(e)
            else:
                maps = torch.stack(
                    [gt_map_256(e.points_of(a), e.height, e.width) for a in e.distinct_actions]
                )
            off = self._offsets[e.index]
            out[off : off + maps.numel()] = maps.reshape(-1).float().numpy()

    def _box_maps(self, e) -> torch.Tensor:
        # deferred: PIL at import
        from PIL import Image

        path = self.bench.resolve(e.image)
        try:
            with open_image_file(path) as f, Image.open(f) as im:
                size = im.size
        except OSError as err:
            raise ValueError(
                f"{self.bench.annotations}: {e.describe()}: its image gives the box scale: {err}"
            ) from None
        return box_map(e.extra["boxes"], size, e.height)[None]

    def maps_256(self, index: int) -> torch.Tensor:
        """(A, H, W) float32 ground truth of entry ``index``, one map per distinct action (sorted)."""
        if self._flat256 is None:
            self.prepare_256()
        assert self._flat256 is not None
        e = self.bench.entries[index]
        off = self._offsets[index]
        n = len(e.distinct_actions) * e.height * e.width
        return torch.from_numpy(np.array(self._flat256[off : off + n])).view(-1, e.height, e.width)

    # ---------------------------------------------------------------- 28
    def maps_28(self) -> torch.Tensor:
        """(P, 28, 28) float64, one per (image, action) pair in :attr:`pair_keys` order."""
        if self.bench.gt_rule != "points":
            raise ValueError(
                f"{self.bench.name}: the 28 x 28 protocol is defined for annotated points only (use --protocol 256)"
            )
        if self._maps28 is None:
            shape = (len(self.pair_keys), HOTSPOTS_RES, HOTSPOTS_RES)
            arr = self._load_or_build(self.path("28"), shape, np.float64, self._fill_28)
            self._maps28 = torch.from_numpy(np.array(arr))
        return self._maps28

    def _fill_28(self, out: np.ndarray) -> None:
        pairs = self.bench.pairs()
        entries = self.bench.entries
        for i, key in enumerate(self.pair_keys):
            point_sets, sizes = [], set()
            for idx in pairs[key]:
                point_sets += entries[idx].points_of(key[1])
                sizes.add((entries[idx].height, entries[idx].width))
            if len(sizes) != 1:
                raise ValueError(
                    f"image {key[0]}: its entries give different annotation sizes {sorted(sizes)}"
                )
            (h, w) = sizes.pop()
            out[i] = gt_map_28(point_sets, h, w).numpy()

    # ---------------------------------------------------------------- cache
    def _load_or_build(self, path: Path, shape: tuple[int, ...], dtype, fill) -> np.ndarray:
        if path.exists():
            try:
                arr = np.load(path, mmap_mode="r")
                if arr.shape == shape and arr.dtype == dtype:
                    log.info("ground truth: cached %s", path)
                    return arr
                log.warning("ground truth: %s has shape %s, expected %s: rebuilding", path, arr.shape, shape)
            except (ValueError, OSError) as e:
                log.warning("ground truth: unreadable cache %s (%s): rebuilding", path, e)
        protocol = path.name.split(".gt", 1)[1].split(".", 1)[0]
        stale = [
            p for p in path.parent.glob(f"{annotations_stem(self.bench)}.gt{protocol}.*.npy") if p != path
        ]
        log.info("ground truth: computing %s", path)
        with atomic_path(path) as tmp:
            arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=shape)
            fill(arr)
            arr.flush()
            del arr
        for p in stale:
            log.info("ground truth: removing stale cache %s (annotations or rule changed)", p)
            p.unlink(missing_ok=True)
        return np.load(path, mmap_mode="r")
