"""``maskahand mine show OUT --out sheet.png``: a few mined clips with their hand boxes and states."""

from __future__ import annotations

from pathlib import Path

from ..core.fsutil import read_jsonl
from .ledger import MANIFEST, SHARDS


class ShowError(RuntimeError):
    """The output folder has no mined clips to show."""


def pick_clips(rows: list[dict], max_clips: int) -> list[dict]:
    """Up to ``max_clips`` rows, taking videos in turn so that one long video does not fill the sheet."""
    by_video: dict[str, list[dict]] = {}
    for row in rows:
        by_video.setdefault(row["video_id"], []).append(row)
    picked: list[dict] = []
    depth = 0
    while len(picked) < max_clips and any(depth < len(v) for v in by_video.values()):
        for clips in by_video.values():
            if depth < len(clips) and len(picked) < max_clips:
                picked.append(clips[depth])
        depth += 1
    return picked


def render_sheet(out_dir: str | Path, sheet_path: str | Path, max_clips: int = 6, frames_per_clip: int = 8):
    """Draw the picked clips (frames with boxes coloured by state, interacting frames marked '*')."""
    # deferred: PIL, cv2, numpy, torch at import
    from ..shards.reader import clip_dataset
    from ..shards.sheet import save_image, stack
    from ..shards.show import clip_sheet

    out = Path(out_dir)
    manifest = out / MANIFEST
    if not manifest.exists():
        raise ShowError(f"{manifest} not found: is {out} a `maskahand mine` output?")
    picked = pick_clips(list(read_jsonl(manifest)), max_clips)
    if not picked:
        raise ShowError(f"{out} holds no mined clips (see {out / 'summary.json'})")
    wanted = {row["key"] for row in picked}
    shards = sorted({str(out / SHARDS / row["shard"]) for row in picked})
    samples = {}
    for sample in clip_dataset(shards, split_by_node=False, split_by_worker=False, on_error="raise"):
        if sample.key in wanted:
            samples[sample.key] = sample
    sheets = [
        clip_sheet(samples[row["key"]], max_frames=frames_per_clip) for row in picked if row["key"] in samples
    ]
    if not sheets:
        raise ShowError(f"the clips listed in {manifest} are missing from {out / SHARDS}")
    return save_image(stack(sheets, pad=8), sheet_path), len(sheets)
