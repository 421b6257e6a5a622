"""Mining throughput: this pipeline vs a naive miner written the way the authors' miner works.

    python -m benchmarks.mine --data ../shared/data [--detector mediapipe] [key=value ...]

Naive baseline (one process): OpenCV reads every frame of each video sequentially, keeps every 6th
(5 fps from 30 fps, as the authors do regardless of the source rate), resizes it to the detector's input
size (:mod:`maskahand.mine.resolution`, the size the pipeline detects at, so both run the same detector on
the same number of pixels), runs the detector on one frame at a time and applies the clip rule; it writes
nothing, which flatters it. The pipeline is :func:`maskahand.mine.pipeline.mine` end to end (decode, detect,
rule, JPEG shards, ledger, manifest) into a temporary folder. Both use the same detector config, in the same
run; the report is frames/s and clips/s of each and their ratio. Ray start-up is timed separately and not
counted. The cost of detecting at the detector's resolution is measured by a second pipeline run that
detects on the stored frames instead (``mine.detect_max_side=mine.frame_max_side``, the behaviour before).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from maskahand.core.config import MineRecipe

NAIVE_KEEP_EVERY = 6


def naive_mine(videos: list[Path], recipe: MineRecipe) -> dict[str, Any]:
    import cv2
    import torch
    from tqdm import tqdm

    from maskahand.detector import build_detector
    from maskahand.mine.resolution import frame_sizes
    from maskahand.mine.rule import interacting_mask, select_clips

    detector = build_detector(recipe.detector)
    frames = clips = 0
    t0 = time.perf_counter()
    for path in tqdm(videos, desc="naive", unit="video"):
        cap = cv2.VideoCapture(str(path))
        detections = []
        index = 0
        while True:
            ok, bgr = cap.read()
            if not ok:
                break
            if index % NAIVE_KEEP_EVERY == 0:
                h, w = bgr.shape[:2]
                size = frame_sizes(recipe.detector, recipe.mine, w, h).detect
                if size != (w, h):
                    bgr = cv2.resize(bgr, size, interpolation=cv2.INTER_AREA)
                rgb = torch.from_numpy(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)).permute(2, 0, 1).contiguous()
                detections.append(detector.detect([rgb], video_id=path.name, frame_indices=[index])[0])
            index += 1
        cap.release()
        frames += len(detections)
        clips += len(select_clips(interacting_mask(detections, recipe.mine), recipe.mine))
    seconds = time.perf_counter() - t0
    detector.close()
    return {"frames": frames, "clips": clips, "seconds": seconds}


def pipeline_mine(videos: list[Path], recipe: MineRecipe) -> dict[str, Any]:
    from maskahand.core.rayutil import init_ray
    from maskahand.mine.pipeline import mine

    t0 = time.perf_counter()
    init_ray(recipe.ray)
    ray_seconds = time.perf_counter() - t0
    with tempfile.TemporaryDirectory(prefix="mine-bench-") as tmp:
        listing = Path(tmp) / "videos.txt"  # the same (possibly repeated) list the naive miner reads
        listing.write_text("".join(f"{v}\n" for v in videos))
        t0 = time.perf_counter()
        summary = mine(recipe, str(listing), Path(tmp) / "out", progress=True)
        seconds = time.perf_counter() - t0
    return {
        "frames": summary["frames"],
        "clips": summary["clips"],
        "seconds": seconds,
        "ray_start": ray_seconds,
        "actor_startup_seconds": summary["startup_seconds_this_run"],
        "steady_frames_per_s": summary["steady_frames_per_second_this_run"],
    }


def repeated_inputs(videos: list[Path], folder: Path, repeat: int) -> list[Path]:
    """``repeat`` links to each video in ``folder``, named apart so the pipeline sees distinct videos."""
    work = []
    for r in range(repeat):
        for v in videos:
            link = folder / f"r{r}_{v.name}"
            link.symlink_to(v.resolve())
            work.append(link)
    return work


def rates(r: dict[str, Any]) -> dict[str, float]:
    return {"frames_per_s": r["frames"] / r["seconds"], "clips_per_s": r["clips"] / r["seconds"]}


def main(argv: list[str] | None = None) -> int:
    from maskahand.core.cli_util import load_recipe
    from maskahand.core.fsutil import atomic_write_json

    p = argparse.ArgumentParser(prog="python -m benchmarks.mine", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="../shared/data", help="shared data folder (uses its videos/)")
    p.add_argument("--detector", choices=["hircnn", "mediapipe"], default=None, help="detector.backend")
    p.add_argument("--repeat", type=int, default=4, help="mine the collection this many times (links)")
    p.add_argument("--json", help="also write the results here")
    p.add_argument("--config", help="recipe YAML")
    args, extra = p.parse_known_args(argv)
    args.overrides = [e for e in extra if "=" in e]
    recipe = load_recipe(MineRecipe, args, **{"detector.backend": args.detector})
    videos_dir = Path(args.data) / "videos"
    videos = sorted(
        v for v in videos_dir.iterdir() if v.suffix.lower() in (".mp4", ".mkv", ".webm", ".avi", ".mov")
    )
    if not videos:
        print(f"no videos in {videos_dir}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="mine-bench-in-") as tmp:
        work = repeated_inputs(videos, Path(tmp), args.repeat)
        naive = naive_mine(work, recipe)
        ours = pipeline_mine(work, recipe)
        at_storage = dataclasses.replace(
            recipe, mine=dataclasses.replace(recipe.mine, detect_max_side=recipe.mine.frame_max_side)
        )
        stored = pipeline_mine(work, at_storage)
    result = {
        "videos": [v.name for v in videos],
        "repeat": args.repeat,
        "detector": recipe.detector.backend,
        "frame_max_side": recipe.mine.frame_max_side,
        "batch_size": recipe.detector.batch_size,
        "naive": {**naive, **rates(naive)},
        "pipeline": {**ours, **rates(ours)},
        "pipeline_detecting_on_stored_frames": {**stored, **rates(stored)},
    }
    result["speedup_frames_per_s"] = result["pipeline"]["frames_per_s"] / result["naive"]["frames_per_s"]
    print(
        f"{len(videos)} videos x {args.repeat}, detector {recipe.detector.backend}, frames at <= {recipe.mine.frame_max_side} px"
    )
    for name in ("naive", "pipeline", "pipeline_detecting_on_stored_frames"):
        r = result[name]
        print(
            f"{name:>9}: {r['frames']:5d} frames {r['clips']:3d} clips in {r['seconds']:6.1f} s -> "
            f"{r['frames_per_s']:7.1f} frames/s {r['clips_per_s']:6.2f} clips/s"
        )
    result["speedup_steady"] = ours["steady_frames_per_s"] / result["naive"]["frames_per_s"]
    print(
        f"ratio pipeline / naive frames/s: {result['speedup_frames_per_s']:.2f}x end to end, "
        f"{result['speedup_steady']:.2f}x after the pipeline's {ours['actor_startup_seconds']:.1f} s actor "
        f"start-up ({ours['steady_frames_per_s']:.1f} frames/s); Ray start {ours['ray_start']:.1f} s not counted"
    )
    result["detector_resolution_cost"] = stored["steady_frames_per_s"] / max(
        ours["steady_frames_per_s"], 1e-9
    )
    print(
        f"detecting at the detector's resolution: {ours['steady_frames_per_s']:.1f} frames/s vs "
        f"{stored['steady_frames_per_s']:.1f} on the stored frames ({result['detector_resolution_cost']:.2f}x "
        f"the time per frame), {ours['clips']} vs {stored['clips']} clips"
    )
    if args.json:
        atomic_write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
