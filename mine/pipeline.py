"""Ray mining driver: videos -> decoder actors -> detector actor pool -> clip rule -> per-video shards.

Why plain actors + ``ray.wait`` rather than Ray Data: mining needs per-video order (the clip rule walks
each video's frames in sequence), per-video atomic output (a video's shards are published and its ledger
line written only when all of it is done) and per-video failure isolation. Expressing those in Ray Data
would mean regrouping a stream that Ray Data deliberately unorders; a small explicit scheduler keeps
them simple and still streams:

- ``workers.decoders`` :class:`~maskahand.mine.worker.VideoMiner` actors (default: the CPUs the
  detectors leave) each hold one video at a time and decode it in batches of ``detector.batch_size``;
- each decoded batch goes (through the object store, never through the driver) to the least-loaded of
  ``workers.detector_actors`` :class:`~maskahand.mine.worker.DetectorWorker` actors (one per GPU, else
  CPU actors); its detections go back to the miner, which applies the rule and writes clips;
- a miner decodes its next batch while earlier ones are being detected, but holds at most
  ``workers.max_inflight_batches`` undetected batches (backpressure): memory is bounded by
  decoders x inflight x batch frames, whatever the size of the collection.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..core import storage
from ..core.config import MineRecipe
from ..core.configbase import check_resume, save_config
from ..core.rayutil import init_ray
from ..video import VideoError
from .ledger import (
    Ledger,
    clean_unclaimed,
    rebuild_manifest,
    summarize,
    write_summary,
)
from .rule import mining_video_config, rule_record
from .scheduler import MineError, VideoTask, run_scheduler
from .sources import iter_inputs

__all__ = ["MineError", "format_summary", "mine", "plan"]

log = logging.getLogger(__name__)


def _out_location(out_dir: str | Path) -> str | Path:
    """``--out`` as the pipeline uses it: a local folder as a Path, an object-store URL as a string."""
    text = str(out_dir)
    return text if storage.is_url(text) else storage.local_path(text)


def plan(
    recipe: MineRecipe, videos: str, out_dir: str | Path, retry_failed: bool = False
) -> tuple[list[str], list[VideoTask], Ledger]:
    """Discover inputs, check/prepare the output, and list the videos still to mine.

    Returns every video id of the input, the tasks still to do, and the ledger. A manifest is streamed:
    only the ids and the tasks to do are kept (a resumed run over millions of rows holds little).
    """

    out = _out_location(out_dir)
    storage.configure(recipe.storage.options)
    try:
        tasks = iter_inputs(videos, recipe.input)
        first = next(tasks, None)  # a missing input or unreadable manifest fails before OUT is touched
    except VideoError as e:
        raise MineError(f"--videos {videos}: {e}") from e
    if first is None:
        raise MineError(f"no videos or frame folders found in {videos}")
    if isinstance(out, str):
        storage.check_bucket(out)  # a missing bucket fails now, in one line, not once per video
    else:
        out.mkdir(parents=True, exist_ok=True)
    # Save the reader settings actually used: mine.fps; each video's decode size is chosen per video
    # (mine.resolution), so video.max_side is recorded as null.
    recipe = dataclasses.replace(recipe, video=mining_video_config(recipe))
    check_resume(recipe, out)  # runtime-only settings (devices, workers, Ray) may change
    save_config(recipe, out)
    ledger = Ledger(out)
    ledger.compact()  # object store: fold the ledger entries of an earlier (killed) run into ledger.jsonl
    ids: list[str] = []
    seen: set[str] = set()
    todo: list[VideoTask] = []
    for task in itertools.chain([first], tasks):
        if task.video_id in seen:
            raise MineError(f"{videos}: duplicate video id in the input: {task.video_id}")
        seen.add(task.video_id)
        ids.append(task.video_id)
        # URLs named one by one (manifest rows, tar members) have no fingerprint yet (None: the ledger's
        # entry decides; the miner takes it when it opens the video); local files and listings have one
        if ledger.is_done(task.video_id, task.fingerprint, retry_failed):
            continue
        if ledger.status(task.video_id) == "ok":
            log.info("%s changed since it was mined: mining it again", task.video_id)
        todo.append(task)
    del seen
    # Files of videos about to be (re)mined are stale whatever the ledger says: a changed input's old
    # clips go now, and its new ledger line replaces the old one when it is done.
    removed = clean_unclaimed(out, ledger, redo={t.stem for t in todo}, only_redo=True)
    if removed:
        log.info(
            "removed %d leftover file(s) of unfinished videos from %s", len(removed), storage.redact(str(out))
        )
    return ids, todo, ledger


def mine(
    recipe: MineRecipe,
    videos: str,
    out_dir: str | Path,
    *,
    retry_failed: bool = False,
    progress: bool = True,
    fault: Callable[[str, str], None] | None = None,
) -> dict[str, Any]:
    """Mine ``videos`` (folder, glob, list/manifest, URL, video WebDataset tars; see
    :mod:`maskahand.mine.sources`) into ``out_dir``; returns the run summary.

    ``fault(point, video_id)`` is a test hook called at ``"published"`` (shards in place, ledger line not
    yet written) and ``"recorded"`` (ledger line written); raising there simulates a crash.
    """

    recipe.detector.validate()  # detector.backend=auto -> the backend that runs, before anything reads it
    out = _out_location(out_dir)
    storage.configure(recipe.storage.options)
    t0 = time.perf_counter()
    ids, todo, ledger = plan(recipe, videos, out, retry_failed)
    if not todo:
        ledger.compact()
        rebuild_manifest(out, ledger)
        summary = summarize(ledger, ids, 0.0, 0)
        summary["nothing_to_do"] = True
        write_summary(out, summary)
        log.info("nothing to do: all %d videos of %s are already in %s", len(ids), videos, ledger.path)
        return summary
    init_ray(recipe.ray)
    timing = run_scheduler(recipe, out, todo, ledger, progress, fault)
    ledger.compact()
    n = rebuild_manifest(out, ledger)
    summary = summarize(ledger, ids, time.perf_counter() - t0, int(timing["frames"]))
    summary["startup_seconds_this_run"] = timing["startup_seconds"]
    summary["steady_frames_per_second_this_run"] = timing["steady_frames_per_second"]
    summary["nothing_to_do"] = False
    summary["manifest_rows"] = n
    summary["rule"] = rule_record(recipe.mine, recipe.detector)
    write_summary(out, summary)
    return summary


def format_summary(summary: dict[str, Any]) -> str:
    lines = [
        f"videos: {summary['videos']} (ok {summary['videos_ok']}, failed {summary['videos_failed']}, "
        f"skipped {summary['videos_skipped']})",
        f"frames: {summary['frames']}  clips: {summary['clips']}  hours of video: {summary['hours_of_video']:.3f}",
        f"this run: {summary['frames_this_run']} frames in {summary['wall_seconds_this_run']:.1f} s "
        f"({summary['frames_per_second_this_run']:.1f} frames/s; "
        f"{summary.get('steady_frames_per_second_this_run', 0.0):.1f} frames/s after "
        f"{summary.get('startup_seconds_this_run', 0.0):.1f} s start-up)",
    ]
    for video_id, reason in sorted(summary["failed"].items()):
        lines.append(f"  failed {video_id}: {reason}")
    return "\n".join(lines)
