"""``shards show``: a contact sheet of the first samples of a shard directory (either kind)."""

from __future__ import annotations

from pathlib import Path

import torch
import webdataset as wds
from PIL import Image

from .codec import decode_raw_sample
from .reader import list_shards, tar_samples
from .schema import ClipSample, MaskAHandSample, Sample
from .sheet import draw_hands, grid, heatmap_overlay, stack, titled


def _spread(n: int, k: int) -> list[int]:
    """At most ``k`` positions spread evenly over range(n)."""
    if n <= k:
        return list(range(n))
    return sorted({round(i * (n - 1) / (k - 1)) for i in range(k)})


def clip_sheet(sample: ClipSample, max_frames: int = 16, cell_side: int = 160) -> Image.Image:
    """Frame strip with hand boxes; interacting frames are marked with '*' in the title."""
    meta = sample.meta
    picks = _spread(sample.frames.shape[0], max_frames)
    cells = [draw_hands(sample.frames[t], meta.get("detections", [[]] * (t + 1))[t]) for t in picks]
    inter = set(meta.get("interacting", []))
    marks = "".join("*" if t in inter else "." for t in picks)
    title = (
        f"{sample.key}  {meta.get('video_id', '?')}  T={sample.frames.shape[0]}  "
        f"frames {meta.get('frame_indices', ['?'])[0]}..{meta.get('frame_indices', ['?'])[-1]}  "
        f"interacting {len(inter)} [{marks}]  {meta.get('detector', {}).get('name', '?')}"
    )
    return titled(grid(cells, cols=8, cell_side=cell_side), title)


def maskahand_sheet(sample: MaskAHandSample, max_frames: int = 8, cell_side: int = 160) -> Image.Image:
    """Frames, then targets followed by their heatmap overlays."""
    picks = _spread(sample.frames.shape[0], max_frames)
    frames = grid([sample.frames[t] for t in picks], cols=max_frames, cell_side=cell_side)
    targets = list(sample.targets)
    overlays = [heatmap_overlay(t, h) for t, h in zip(sample.targets, sample.heatmaps)]
    chosen = [p.get("frame", "?") for p in sample.meta.get("targets", [])]
    k = len(targets)
    title = f"{sample.key}  clip {sample.meta.get('clip_key', '?')}  K={k}  chosen frames {chosen}"
    return titled(stack([frames, grid(targets + overlays, cols=max(k, 1) * 2, cell_side=cell_side)]), title)


def sample_sheet(sample: Sample, cell_side: int = 160) -> Image.Image:
    if isinstance(sample, ClipSample):
        return clip_sheet(sample, cell_side=cell_side)
    return maskahand_sheet(sample, cell_side=cell_side)


def first_samples(urls_or_dir: str | Path, n: int) -> list[Sample]:
    pipeline = wds.DataPipeline(
        wds.SimpleShardList(list_shards(urls_or_dir)), tar_samples(), wds.map(decode_raw_sample)
    )
    out: list[Sample] = []
    for sample in pipeline:
        out.append(sample)
        if len(out) >= n:
            break
    return out


def render_sheet(urls_or_dir: str | Path, n: int = 4, cell_side: int = 160) -> Image.Image:
    with torch.no_grad():
        samples = first_samples(urls_or_dir, n)
    if not samples:
        raise ValueError(f"{urls_or_dir}: no samples to show")
    return stack([sample_sheet(s, cell_side) for s in samples], pad=8)
