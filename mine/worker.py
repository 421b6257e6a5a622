"""The two kinds of Ray actor a mining run uses (plain classes; the pipeline wraps them with ``ray.remote``).

- :class:`VideoMiner` (CPU): decodes one video at a time in batches, sends each batch at the detector's
  input size and keeps its storage-size copy until the detections come back
  (:mod:`~maskahand.mine.resolution`), applies the clip rule frame by frame
  (:class:`~maskahand.mine.rule.StreamingClipSelector`, at most ``clip_length`` frames held) and writes
  kept clips to the video's own staging shards.
- :class:`DetectorWorker` (one per GPU, else CPU): runs the hand detector on batches of frames.

Frames travel miner -> object store -> detector once; only detections (small) come back to the miner. For a
local output folder the miners stage in ``OUT/.staging`` (so on a multi-node cluster it must be a shared
filesystem); for an object-store output (``s3://...``) each miner stages in a node-local temporary folder
and uploads a finished video itself (:func:`~maskahand.mine.ledger.upload_video`): no shared mount needed.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core import storage
from ..core.config import DetectorConfig, MineRecipe
from ..core.rayutil import node_record
from ..detector import build_detector
from ..shards.schema import ClipSample, make_key
from ..video import open_video
from ..video.sampling import resize_uint8
from ..video.source import StreamSource, VideoInput, needs_stream
from .ledger import STAGING, frames_log_name, upload_video
from .resolution import FrameSizes, frame_sizes
from .rule import (
    StreamingClipSelector,
    frame_interacts,
    hand_interacts,
    mining_video_config,
    rule_record,
)


class VideoMiner:
    """Decode -> (detections from outside) -> rule -> staging shards, for one video at a time."""

    def __init__(self, recipe: MineRecipe, out_dir: str, env: dict[str, str] | None = None) -> None:
        storage.setup_worker(recipe.storage.options, env)
        self.recipe = recipe
        self.out = str(out_dir)
        self.remote = storage.is_url(self.out)
        # where this miner stages its video: node-local for an object store (uploaded when complete)
        self.staging_root = (
            Path(tempfile.mkdtemp(prefix="maskahand-mine-")) if self.remote else Path(out_dir) / STAGING
        )
        self.video_cfg = mining_video_config(recipe)
        self.rule = rule_record(recipe.mine, recipe.detector)
        self.prefetched: Prefetch | None = None  # the next video, opening in the background (not reset)
        self._reset()

    def _reset(self) -> None:
        self.reader: Any = None
        self.frames_log: Any = None
        self._batches: Any = None
        self.writer: Any = None
        self.video_id = ""
        self.stem = ""
        # batch number -> stored frames, source indices, pts, span of each frame (manifest spans; else 0)
        self.pending: dict[int, tuple[np.ndarray, list[int], list[float], list[int]]] = {}
        self.detections: dict[int, list[list[dict]]] = {}
        self.next_batch_no = 0
        self.next_apply = 0
        self.frames = 0
        self.rows: list[dict[str, Any]] = []
        self.selector: StreamingClipSelector | None = None
        self.source: Any = None  # the StreamSource of a URL / tar member (one open for every pass)
        self.spans: tuple[tuple[float, float], ...] | None = None
        self.span_now = 0  # the span (manifest clips column) the selector is working in
        self.segment_first = 0  # position of the current span's first frame among the video's frames
        self.longest_segment = 0  # frames of the longest span mined so far (short-video verdict)
        self.source_meta: dict[str, Any] | None = None

    # -- one video ---------------------------------------------------------------------------------

    def start(
        self,
        video_id: str,
        path: str,
        stem: str,
        detector: dict[str, str],
        task: Any = None,
        ahead: Any = None,
    ) -> dict[str, Any]:
        """Open the video (``task``: a :class:`~maskahand.mine.sources.VideoTask` naming a URL, a tar
        member, spans or metadata; None: ``path`` is a local file or frame folder).

        ``ahead``: the task this miner gets next (a URL or tar member), prefetched in the background while
        this one is mined (:class:`Prefetch`); its failure is raised by the ``start`` of that task.
        """
        # deferred: cv2, torchvision at import
        from ..shards.writer import ShardWriter

        self.abort()
        self.video_id, self.path, self.stem, self.detector = video_id, path, stem, detector
        ready = self._claim_prefetch(task)
        if ahead is not None:
            self.prefetched = Prefetch(ahead)
        if task is not None and task.problem is not None:
            if ready is not None:
                ready.discard()
            raise task.problem
        target: Any = task.source if task is not None else path
        if ready is not None:
            self.source = target = ready.result()  # the prefetch's typed error, if it failed, is this video's
        elif needs_stream(target):  # a listed object's version is known: no request to ask it again
            known = task.fingerprint if task is not None else None
            self.source = target = StreamSource(target, known=known)
        self.reader = open_video(target, self.video_cfg)
        info = self.reader.info
        self.sizes = frame_sizes(self.recipe.detector, self.recipe.mine, int(info.width), int(info.height))
        if self.sizes.decode_max_side is not None:
            self.reader = open_video(target, mining_video_config(self.recipe, self.sizes.decode_max_side))
        self.spans = task.spans if task is not None else None
        self.source_meta = _source_meta(task, self.source)
        self.info = {
            "width": int(info.width),
            "height": int(info.height),
            "fps": float(info.fps),
            "num_frames": int(info.num_frames),
            "duration": float(info.duration),
        }
        self._batches = iter(self.reader.batches(self.recipe.detector.batch_size))
        self.selector = StreamingClipSelector(self.recipe.mine)
        fingerprint = self.source.fingerprint() if self.source is not None else None
        staging = self.staging_root / stem
        if staging.exists():
            shutil.rmtree(staging)
        staging.mkdir(parents=True)
        self.writer = ShardWriter(staging, stem, self.recipe.shards, kind="clip")
        self.frames_log = open(staging / frames_log_name(stem), "w", encoding="utf-8")  # noqa: SIM115
        return {**self.info, "node": node_record(), "fingerprint": fingerprint}

    def next_batch(self) -> tuple[dict[str, Any], np.ndarray | None]:
        """Decode the next batch: (``{eof, batch, indices}``, frames uint8 (B,3,H,W) or None at the end).

        The frames returned are for the detector, at its input size; the storage-size copy stays here.
        """

        batch, spans_of = self._next_frames()
        if batch is None:
            return {"eof": True, "batch": self.next_batch_no, "indices": []}, None
        decoded = batch.frames
        for_detector = resize_uint8(decoded, *self.sizes.detect).numpy()
        stored = resize_uint8(decoded, *self.sizes.store).numpy()
        indices = [int(i) for i in batch.indices]
        no = self.next_batch_no
        self.next_batch_no += 1
        self.pending[no] = (stored, indices, [float(p) for p in batch.pts], spans_of)
        return {"eof": False, "batch": no, "indices": indices}, for_detector

    def add_detections(self, batch_no: int, detections: list[list[dict]]) -> dict[str, int]:
        """Take one batch's detections; apply the rule to every batch now complete, in order."""
        self.detections[batch_no] = detections
        while self.next_apply in self.detections:
            frames, indices, pts, spans_of = self.pending.pop(self.next_apply)
            dets = self.detections.pop(self.next_apply)
            if len(dets) != len(indices):
                raise RuntimeError(f"{self.video_id}: {len(dets)} detections for {len(indices)} frames")
            assert self.selector is not None, "start() first"
            for image, index, t, raw_hands, span in zip(frames, indices, pts, dets, spans_of):
                if span != self.span_now:  # no clip crosses a span's edge: close the last one's clips
                    self._end_segment()
                    self.span_now = span
                hands = [_clean_hand(h, self.sizes) for h in raw_hands]
                hit = frame_interacts(hands, self.recipe.mine)
                record = {"pos": self.frames, "index": index, "pts": t, "hands": hands, "interacting": hit}
                self.frames_log.write(json.dumps(record) + "\n")
                for window, items in self.selector.push((image, index, t, hands), hit):
                    self._write_clip(window, items)
                self.frames += 1
            self.next_apply += 1
        return {"frames": self.frames, "clips": len(self.rows)}

    def finish(self) -> dict[str, Any]:
        """Write the tail/short clip, close the shards; returns manifest rows and counts."""
        if self.pending:
            raise RuntimeError(f"{self.video_id}: finish() with {len(self.pending)} batches not detected")
        self._end_segment()
        longest = self.longest_segment
        windows_possible = longest >= self.recipe.mine.clip_length or (
            self.recipe.mine.short_video == "keep" and longest >= self.recipe.mine.min_frames
        )
        infos = self.writer.close()
        self.frames_log.close()
        shard_of = {key: info.path.name for info in infos for key in info.keys}
        for row in self.rows:
            row["shard"] = shard_of[row["key"]]
        published: dict[str, Any] = {}
        if self.remote:
            staging = self.staging_root / self.stem
            published["published"] = upload_video(staging, self.out, self.stem, self.rows)
            shutil.rmtree(staging, ignore_errors=True)
        result = {
            **published,
            "frames": self.frames,
            "clips": len(self.rows),
            "rows": self.rows,
            "too_short": not windows_possible,
            "skip_reason": "" if windows_possible else self._too_short_reason(),
            "duration": self.info["duration"],
            "node": node_record(),
        }
        self._close_reader()
        self._reset()
        return result

    def abort(self) -> None:
        """Drop the current video's staged output (after a failure elsewhere)."""
        if self.writer is not None:
            self.writer.abort()
        if self.frames_log is not None:
            self.frames_log.close()
        if self.stem:
            shutil.rmtree(self.staging_root / self.stem, ignore_errors=True)
        self._close_reader()
        self._reset()

    def _claim_prefetch(self, task: Any) -> Prefetch | None:
        """The prefetch made for ``task`` (None: there is none); a prefetch of another video (its task
        went to another miner) is dropped."""
        pending, self.prefetched = self.prefetched, None
        if pending is None:
            return None
        if task is not None and pending.is_for(task):
            return pending
        pending.discard()
        return None

    def _next_frames(self) -> tuple[Any, list[int]]:
        """The next decoded batch and the span of each frame, frames outside every span dropped (not
        detected); decoding stops after the last span. Without spans: the batch as decoded, span 0."""
        while True:
            batch = next(self._batches, None)
            if batch is None or self.spans is None:
                return batch, [0] * (len(batch) if batch is not None else 0)
            keep, spans_of = [], []
            for i, t in enumerate(batch.pts):
                span = next((k for k, (a, b) in enumerate(self.spans) if a <= t < b), -1)
                if span >= 0:
                    keep.append(i)
                    spans_of.append(span)
            if keep:
                batch.frames, batch.indices = batch.frames[keep], [batch.indices[i] for i in keep]
                batch.pts = [batch.pts[i] for i in keep]
                return batch, spans_of
            if batch.pts and batch.pts[-1] >= self.spans[-1][1]:
                self._close_reader()
                self._batches = iter(())
                return None, []

    def _end_segment(self) -> None:
        """Write the current span's tail/short clip; the next frame starts a new span and selector."""
        assert self.selector is not None, "start() first"
        for window, items in self.selector.finish():
            self._write_clip(window, items)
        self.longest_segment = max(self.longest_segment, self.selector.count)
        self.selector = StreamingClipSelector(self.recipe.mine)
        self.segment_first = self.frames

    def _too_short_reason(self) -> str:
        m = self.recipe.mine
        if self.spans is not None:
            return (
                f"the longest of {len(self.spans)} span(s) has {self.longest_segment} sampled frames: shorter "
                f"than one clip ({m.clip_length})"
                + (f" and than mine.min_frames ({m.min_frames})" if m.short_video == "keep" else "")
            )
        if m.short_video == "drop":
            return f"{self.frames} sampled frames: shorter than one clip ({m.clip_length}); mine.short_video=drop"
        return (
            f"{self.frames} sampled frames: shorter than one clip and than mine.min_frames ({m.min_frames})"
        )

    def _close_reader(self) -> None:
        # Closing the batch generator now runs the decoder's cleanup (its container is closed) instead
        # of leaving it to garbage collection.
        if self._batches is not None and hasattr(self._batches, "close"):
            self._batches.close()
        if self.source is not None:
            self.source.close()
            self.source = None

    # -- clips -------------------------------------------------------------------------------------

    def _write_clip(self, span, items: list[tuple[np.ndarray, int, float, list[dict]]]) -> None:

        frames = torch.from_numpy(np.stack([image for image, _, _, _ in items]))
        indices = [index for _, index, _, _ in items]
        detections = [hands for _, _, _, hands in items]
        key = make_key(self.video_id, indices[0])
        height, width = int(frames.shape[2]), int(frames.shape[3])
        meta = {
            "schema": "maskahand.clip/1",
            "video_id": self.video_id,
            "video_path": storage.redact(str(self.path)),  # no credentials in clip metadata
            "fps": float(self.recipe.mine.fps),
            "frame_indices": indices,
            "timestamps": [t for _, _, t, _ in items],
            "width": width,
            "height": height,
            "source_width": self.info["width"],
            "source_height": self.info["height"],
            "detections": detections,
            "interacting": list(span.interacting),
            "rule": self.rule,
            "detector": dict(self.detector),
        }
        if self.source_meta is not None:  # what the manifest row or the tar's KEY.json says about the video
            meta["source"] = self.source_meta
        self.writer.write(ClipSample(key=key, frames=frames, meta=meta))
        self.rows.append(
            {
                "key": key,
                "video_id": self.video_id,
                "start": self.segment_first + span.start,  # positions among the video's sampled frames
                "stop": self.segment_first + span.stop,
                "num_frames": span.length,
                "first_frame": indices[0],
                "last_frame": indices[-1],
                "fps": float(self.recipe.mine.fps),
                "interacting_frames": [indices[i] for i in span.interacting],
                "boxes": [
                    [h["box"] for h in detections[i] if hand_interacts(h, self.recipe.mine)]
                    for i in span.interacting
                ],
                "width": width,
                "height": height,
                **({"source": self.source_meta} if self.source_meta is not None else {}),
            }
        )


class Prefetch:
    """The next video of a miner, opened and its first block read in a background thread while the
    current one is mined: the object store's latency (a request per video) is not waited for.

    One at a time per miner, so memory stays bounded (one read-ahead block, ``VIDEO_BLOCK_SIZE``). The
    thread only does I/O, which releases the GIL. A failure is kept and raised by :meth:`result`, in
    the ``start`` of that video: it is recorded for that video alone, with its typed reason.
    """

    def __init__(self, task: Any) -> None:

        self.task = task
        self.source = StreamSource(task.source, known=task.fingerprint)
        self.error: BaseException | None = None
        self._lock = threading.Lock()
        self._dropped = self._finished = False
        self._thread = threading.Thread(target=self._run, name=f"prefetch {task.video_id}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self.source.prefetch()
        except BaseException as e:  # noqa: BLE001 - kept for the video's start(), which raises it
            self.error = e
        with self._lock:
            self._finished = True
            if self._dropped:
                self.source.close()

    def is_for(self, task: Any) -> bool:
        return bool(task.video_id == self.task.video_id and task.source == self.task.source)

    def result(self) -> Any:
        """The opened :class:`~maskahand.video.source.StreamSource` (waits for the thread), or the
        prefetch's error."""
        self._thread.join()
        if self.error is not None:
            self.source.close()
            raise self.error
        return self.source

    def discard(self) -> None:
        """Not needed after all: closed now, or by the thread when it ends (nobody waits for it)."""
        with self._lock:
            self._dropped = True
            if self._finished:
                self.source.close()


def _source_meta(task: Any, source: Any) -> dict[str, Any] | None:
    """What the input says about a video, for its clips: the manifest row's key and other columns, or
    a tar member's key, tar and ``KEY.json``. None for plain files (their clips stay as before)."""

    if task is None:
        return None
    meta: dict[str, Any] = {}
    if task.metadata:
        names, (key, *values) = task.metadata
        meta.update(zip(names, values))
        if key:
            meta["key"] = key
    if task.spans:
        meta["clips"] = [list(span) for span in task.spans]
    if isinstance(task.source, VideoInput) and task.source.member:
        member = task.source.member
        meta.update(key=member.rsplit("/", 1)[-1].split(".", 1)[0], tar=task.source.name.rsplit("#", 1)[0])
        meta["member"] = member
        raw = source.read_meta() if source is not None else b""
        if raw:
            try:
                meta["json"] = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                meta["json_error"] = f"{member.rsplit('.', 1)[0]}.json is not JSON ({e})"
    # values as JSON will hold them (a Parquet timestamp becomes its text)
    return json.loads(json.dumps(meta, default=str)) if meta else None


def _clean_hand(h: dict[str, Any], sizes: FrameSizes) -> dict[str, Any]:
    """A detection as the clip records it: its box mapped from detection to stored-frame pixels."""
    box = [float(v) for v in h["box"]]
    if sizes.detect != sizes.store:
        (sw, sh), (dw, dh) = sizes.store, sizes.detect
        # a box on the detection frame's edge stays on the stored frame's edge (no rounding past it)
        box = [min(max(v * s / d, 0.0), float(s)) for v, s, d in zip(box, (sw, sh, sw, sh), (dw, dh, dw, dh))]
    return {"box": box, "state": str(h["state"]), "score": float(h["score"])}


class DetectorWorker:
    """One detector instance; ``detect`` returns plain dicts so results are cheap to ship."""

    def __init__(self, cfg: DetectorConfig) -> None:

        self.detector = build_detector(cfg)
        self.busy_seconds = 0.0
        self.frames = 0

    def describe(self) -> dict[str, str]:
        d = self.detector.describe() if hasattr(self.detector, "describe") else {}
        return {
            "name": str(d.get("name", self.detector.name)),
            "version": str(d.get("version", self.detector.version)),
        }

    def detect(self, frames: np.ndarray, video_id: str, indices: list[int]) -> list[list[dict[str, Any]]]:

        t0 = time.perf_counter()
        batch = torch.from_numpy(np.array(frames))  # the object-store array is read-only
        hands = self.detector.detect(batch, video_id=video_id, frame_indices=indices)
        self.busy_seconds += time.perf_counter() - t0
        self.frames += len(indices)
        return [[h.to_dict() for h in per_frame] for per_frame in hands]

    def stats(self) -> dict[str, float]:
        return {"busy_seconds": self.busy_seconds, "frames": self.frames}
