"""Score a predictor on a benchmark under one or both protocols, on one process or under torchrun.

Each rank predicts the entries ``index % world == rank`` and reduces every prediction at once to what
scoring needs (per-map 256 values, per-action 28 x 28 maps, action scores, a small thumbnail); rank 0
gathers these by entry id (each id kept once) and computes the summaries in id order, so the result does
not depend on the number of processes. Zero-shot (C = 1) maps are scored against every ground-truth
action of the entry; per-action models (C = number of actions) per action.

28 x 28 rule with video-conditioned predictions: the Hotspots protocol has one prediction per (image,
action) pair; a pair annotated from several videos gets the mean of those entries' (sum-1) maps.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import torch
from tqdm import tqdm

from ..core.config import EvalConfig, VideoConfig
from ..runtime import distributed as dist
from .benchmark import Benchmark, Entry, MediaError
from .clips import clip_span, load_clips, load_frame_list, load_image
from .groundtruth import GroundTruth
from .metrics import (
    HOTSPOTS_RES,
    Scores28,
    Scores256,
    auc_judd_256,
    kld_256,
    resize_bilinear,
    score_28,
    sim_256,
    top1_accuracy,
)
from .predictor import Predictor

log = logging.getLogger(__name__)
THUMB = 64


@dataclass
class EntryResult:
    index: int
    actions: list[int]  # the entry's distinct ground-truth actions (order of the lists below)
    kld: list[float] = field(default_factory=list)  # 256 rule, per action
    sim: list[float] = field(default_factory=list)
    auc_j: list[float] = field(default_factory=list)
    maps28: torch.Tensor | None = None  # (A, 28, 28) float64 sum-1 prediction per action
    action_scores: list[float] | None = None
    thumbs: torch.Tensor | None = None  # (A, 64, 64) float32 prediction per action, for the overlays


@dataclass
class EvalResult:
    scores256: Scores256 | None
    scores28: Scores28 | None
    entries: dict[int, EntryResult]  # by entry index (rank 0 only)
    pair28: dict[tuple[str, int], float] = field(default_factory=dict)  # per-pair 28 KLD


def per_action_maps(pred: torch.Tensor, entry: Entry, num_actions: int, model: str) -> torch.Tensor:
    """(C, h, w) -> (A, h, w): the maps scored against the entry's distinct actions."""
    if pred.dim() != 3:
        raise ValueError(f"{model}: heatmaps must be (C, h, w), got {tuple(pred.shape)}")
    acts = entry.distinct_actions
    if pred.shape[0] == 1:
        return pred.expand(len(acts), -1, -1)
    if pred.shape[0] == num_actions:
        return pred[acts]
    raise ValueError(
        f"{model}: {pred.shape[0]} heatmaps for {entry.describe()}: expected 1 (zero-shot) or {num_actions}"
    )


def normalise(maps: torch.Tensor) -> torch.Tensor:
    s = maps.sum(dim=(-2, -1), keepdim=True)
    if bool((s <= 0).any()) or not bool(torch.isfinite(maps).all()):
        raise ValueError("a predicted heatmap is all zero, negative or not finite")
    return maps / s


def score_entry(
    entry: Entry,
    bench: Benchmark,
    predictor: Predictor,
    gt: GroundTruth,
    protocols: list[str],
    cfg: EvalConfig,
    video: VideoConfig | None,
    cache: dict | None = None,
) -> EntryResult:
    clips, image = [], None
    if predictor.needs_media:
        try:
            image = load_image(bench.resolve(entry.image), cfg.image_size)
            if "frames" in entry.extra:  # a frame list (AssistQ): one clip of at most 64 frames, as theirs
                clips = [load_frame_list([bench.resolve(f) for f in entry.extra["frames"]], cfg.image_size)]
            else:
                span = clip_span(entry.extra)  # an EPIC clip: a frame range of its video's folder
                clips = load_clips(bench.resolve(entry.video), cfg, video, frame_range=span)
        except Exception as e:  # noqa: BLE001 - video, image and OS errors alike
            raise MediaError(f"{bench.annotations}: {entry.describe()}: {e}") from e
    pred = predictor(clips, image)
    maps = per_action_maps(pred.heatmaps.detach().double().cpu(), entry, bench.num_actions, predictor.name)
    res = EntryResult(index=entry.index, actions=entry.distinct_actions)
    if pred.actions is not None:
        res.action_scores = pred.actions.detach().double().cpu().tolist()
    # a predictor marked `constant` (the baselines) gives every entry the same maps: derive them once
    key = (entry.height, entry.width, len(maps)) if getattr(predictor, "constant", False) else None
    if key is not None and cache is not None and key in cache:
        full, maps28 = cache[key]
    else:
        full = normalise(_resize_hw(maps, entry))
        maps28 = resize_bilinear(normalise(maps), HOTSPOTS_RES) if "28" in protocols else None
        if key is not None and cache is not None:
            cache[key] = (full, maps28)
    if "256" in protocols:
        p256 = full + getattr(predictor, "floor_256", 0.0)
        g = gt.maps_256(entry.index).double()
        res.kld = kld_256(p256, g).tolist()
        res.sim = sim_256(p256, g).tolist()
        res.auc_j = [auc_judd_256(p, q) for p, q in zip(p256, g)]
    res.maps28 = maps28
    res.thumbs = torch.nn.functional.adaptive_avg_pool2d(full, THUMB).float()
    return res


def _resize_hw(maps: torch.Tensor, entry: Entry) -> torch.Tensor:
    if maps.shape[-2:] == (entry.height, entry.width):
        return maps
    return torch.nn.functional.interpolate(
        maps[:, None], size=(entry.height, entry.width), mode="bilinear", align_corners=False
    )[:, 0]


def run_eval(
    bench: Benchmark,
    predictor: Predictor,
    protocols: list[str],
    cfg: EvalConfig,
    video: VideoConfig | None = None,
    progress: bool = True,
) -> EvalResult | None:
    """Evaluate; returns the result on rank 0 and None on the other ranks."""

    rank, world = dist.rank_world()
    # rank 0 builds the ground-truth caches first; the others then read them
    gt = None
    if rank == 0:
        gt = GroundTruth(bench, cfg.cache_dir, progress=progress)
        if "256" in protocols:
            gt.prepare_256()
        if "28" in protocols:
            gt.maps_28()
    dist.barrier()
    if gt is None:
        gt = GroundTruth(bench, cfg.cache_dir, progress=False)

    mine = [e for e in bench.entries if e.index % world == rank]
    results: dict[int, EntryResult] = {}
    cache: dict = {}
    t0 = time.monotonic()
    shown = progress and rank == 0
    for entry in tqdm(mine, desc="eval", unit="entry", disable=not shown):
        results[entry.index] = score_entry(entry, bench, predictor, gt, protocols, cfg, video, cache)
    if shown:
        seconds = time.monotonic() - t0
        log.info(
            "eval: %d entries on this rank in %.1f s (%.1f/s)",
            len(mine),
            seconds,
            len(mine) / max(seconds, 1e-9),
        )
    gathered = dist.all_gather_object(results) if world > 1 else [results]
    if rank != 0:
        return None
    merged: dict[int, EntryResult] = {}
    for part in gathered:
        for idx, r in part.items():
            merged.setdefault(idx, r)  # each id scored once
    missing = [e.index for e in bench.entries if e.index not in merged]
    if missing:
        raise RuntimeError(f"no prediction for {len(missing)} entries (first: {missing[:5]})")
    return summarise(bench, gt, merged, protocols, cfg.seed)


def summarise(
    bench: Benchmark, gt: GroundTruth, merged: dict[int, EntryResult], protocols: list[str], seed: int
) -> EvalResult:
    ordered = [merged[e.index] for e in bench.entries]
    s256 = s28 = None
    pair28: dict[tuple[str, int], float] = {}
    if "256" in protocols:
        kld = torch.tensor([v for r in ordered for v in r.kld], dtype=torch.float64)
        sim = torch.tensor([v for r in ordered for v in r.sim], dtype=torch.float64)
        auc = torch.tensor([v for r in ordered for v in r.auc_j], dtype=torch.float64)
        valid = auc[auc >= 0]
        top1 = None
        if all(r.action_scores is not None for r in ordered):
            top1 = top1_accuracy(
                [torch.tensor(r.action_scores) for r in ordered], [r.actions for r in ordered]
            )
        s256 = Scores256(
            kld=float(kld.sum() / len(kld)),
            sim=float(sim.sum() / len(sim)),
            auc_j=float(valid.mean()) if len(valid) else None,
            top1=top1,
            n=len(kld),
        )
    if "28" in protocols:
        pairs = bench.pairs()
        preds = []
        for key in gt.pair_keys:
            maps = [merged[i].maps28[merged[i].actions.index(key[1])] for i in pairs[key]]  # type: ignore[index]
            preds.append(torch.stack(maps).mean(0))
        s28, per = score_28(torch.stack(preds), gt.maps_28(), seed=seed)
        pair28 = dict(zip(gt.pair_keys, per["kld"].tolist()))
    return EvalResult(scores256=s256, scores28=s28, entries=merged, pair28=pair28)
