"""The two kinds of Ray actor a mining run uses (plain classes; the pipeline wraps them with ``ray.remote``).

- :class:`VideoMiner` (CPU): mines the videos the scheduler hands it, one after another, as one stream of
  frame batches: a batch holds ``detector.batch_size`` frames and may hold the tail of one video and the
  head of the next (``workers.pack_videos``), so very short videos cost the detector and the scheduler no
  more calls than one long video with the same frames. Each :class:`VideoJob` decodes its video, sends its
  frames at the detector's input size and keeps their storage-size copy until the detections come back
  (:mod:`~maskahand.mine.resolution`), applies the clip rule frame by frame
  (:class:`~maskahand.mine.rule.StreamingClipSelector`, at most ``clip_length`` frames held) and writes
  kept clips to its video's own staging shards. A video that fails (open, decode, write, upload) fails
  alone: the miner reports it and goes on with the next.
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
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
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
from .ledger import STAGING, error_reason, frames_log_name, upload_video
from .resolution import FrameSizes, frame_sizes
from .rule import (
    StreamingClipSelector,
    frame_interacts,
    hand_interacts,
    mining_video_config,
    rule_record,
)


@dataclass
class _Segment:
    """The frames of one video inside one batch."""

    job: VideoJob
    for_detector: np.ndarray | None  # at the detector's input size, until sent
    stored: np.ndarray  # at the storage size, kept here until the detections come back
    indices: list[int]
    pts: list[float]
    spans_of: list[int]  # the span (manifest clips column) of each frame; 0 without spans


@dataclass
class _Batch:
    segments: list[_Segment] = field(default_factory=list)


class VideoMiner:
    """The videos handed to it (:meth:`next_batch`), mined in order as one stream of frame batches.

    The scheduler calls ``next_batch(tasks)`` (decode the next batch; ``tasks``: videos to queue after the
    ones held) and ``add_detections(batch, detections)`` (apply a batch's detections; batches are applied
    in order). Both report what happened to the videos since: ``opened`` (its facts), ``finished`` (its
    shards are staged or uploaded: the scheduler records it), ``failed`` (the reason) and ``progress``.
    """

    def __init__(
        self, recipe: MineRecipe, out_dir: str, detector: dict[str, str], env: dict[str, str] | None = None
    ) -> None:
        storage.setup_worker(recipe.storage.options, env)
        self.recipe = recipe
        self.out = str(out_dir)
        self.remote = storage.is_url(self.out)
        # where this miner stages its videos: node-local for an object store (uploaded when complete)
        self.staging_root = (
            Path(tempfile.mkdtemp(prefix="maskahand-mine-")) if self.remote else Path(out_dir) / STAGING
        )
        self.video_cfg = mining_video_config(recipe)
        self.rule = rule_record(recipe.mine, recipe.detector)
        self.detector = dict(detector)  # the detector's name and version, for every clip
        self.node = node_record()
        self.queue: deque[tuple[int, Any, Prefetch | None]] = deque()  # (job no, task, its prefetch)
        self.current: VideoJob | None = None  # the job being decoded
        self.jobs: dict[int, VideoJob] = {}  # every job opened and not yet finished or failed
        self.batches: dict[int, _Batch] = {}  # decoded, waiting for detections
        self.detections: dict[int, list[list[dict]]] = {}
        self.next_batch_no = 0
        self.next_apply = 0
        self._report: dict[str, Any] = _empty_report()

    # -- the scheduler's calls ----------------------------------------------------------------------

    def next_batch(
        self, tasks: Sequence[tuple[int, Any]] = ()
    ) -> tuple[dict[str, Any], list[np.ndarray] | None]:
        """Queue ``tasks`` ((job no, :class:`~maskahand.mine.sources.VideoTask`)), then decode up to
        ``detector.batch_size`` frames: ``(report, frames)``.

        ``frames``: one uint8 (n, 3, H, W) array per video in the batch, at the detector's input size (None
        when no frame was decoded). The report adds ``batch`` (its number, or None), ``segments``
        (``[job no, video id, frame indices]`` per array), ``drained`` (nothing left to decode until more
        tasks come) and ``left`` (about how many frames the video being decoded has left; None: unknown).
        """
        for no, task in tasks:
            # worth it only when another video is mined first (else it is opened right now)
            ahead = self.current is not None or bool(self.queue)
            prefetch = Prefetch(task) if ahead and self.recipe.workers.prefetch and _streamed(task) else None
            self.queue.append((no, task, prefetch))
        size = self.recipe.detector.batch_size
        batch = _Batch()
        wanted = size
        while wanted > 0:
            job = self._decoding()
            if job is None:
                break
            try:
                got = job.decode(wanted)
            except Exception as e:  # noqa: BLE001 - the video fails alone, with its typed reason
                self._fail(job, e)
                continue
            if got is not None:
                batch.segments.append(got)
                job.in_flight += len(got.indices)  # before _maybe_finish below looks at it
                wanted -= len(got.indices)
            if job.decoded_all:
                self.current = None
                self._report["decoded"].append(job.no)
                self._maybe_finish(job)
                if not self.recipe.workers.pack_videos and batch.segments:
                    break  # one video per batch
        report = self._take_report()
        report["drained"] = self.current is None and not self.queue
        report["left"] = self.current.frames_left() if self.current is not None else None
        if not batch.segments:
            report.update(batch=None, segments=[])
            return report, None
        no = self.next_batch_no
        self.next_batch_no += 1
        self.batches[no] = batch
        report.update(
            batch=no,
            segments=[[seg.job.no, seg.job.video_id, seg.indices] for seg in batch.segments],
        )
        for_detector: list[np.ndarray] = []
        for seg in batch.segments:
            assert seg.for_detector is not None
            for_detector.append(seg.for_detector)
            seg.for_detector = None  # sent: not kept here
        return report, for_detector

    def add_detections(self, batch_no: int, detections: list[list[dict]]) -> dict[str, Any]:
        """Take one batch's detections (one list of hands per frame, in the batch's order); apply the rule
        to every batch now complete, in order. Returns the report (see the class doc)."""
        self.detections[batch_no] = detections
        while self.next_apply in self.detections:
            batch = self.batches.pop(self.next_apply)
            dets = self.detections.pop(self.next_apply)
            n = sum(len(seg.indices) for seg in batch.segments)
            if len(dets) != n:
                raise RuntimeError(f"batch {self.next_apply}: {len(dets)} detections for {n} frames")
            at = 0
            for seg in batch.segments:
                job, mine = seg.job, dets[at : at + len(seg.indices)]
                at += len(seg.indices)
                job.in_flight -= len(seg.indices)
                if job.failed:
                    continue
                try:
                    job.apply(seg, mine)
                except Exception as e:  # noqa: BLE001 - a write error fails this video alone
                    self._fail(job, e)
                    continue
                self._report["progress"][job.no] = [job.frames, len(job.rows)]
                self._maybe_finish(job)
            self.next_apply += 1
        return self._take_report()

    def close(self) -> None:
        """Drop every video held and the node-local staging folder of an object-store output (the run
        ends)."""
        for job in list(self.jobs.values()):
            job.abort()
        for _, _, prefetch in self.queue:
            if prefetch is not None:
                prefetch.discard()
        self.queue.clear()
        self.jobs.clear()
        self.current = None
        if self.remote:
            shutil.rmtree(self.staging_root, ignore_errors=True)

    # -- jobs --------------------------------------------------------------------------------------

    def _decoding(self) -> VideoJob | None:
        """The job to decode from: the current one, else the next queued video, opened now."""
        while self.current is None and self.queue:
            no, task, prefetch = self.queue.popleft()
            try:
                job = VideoJob(self, no, task, prefetch)
            except Exception as e:  # noqa: BLE001 - a video that cannot be opened fails alone
                self._report["failed"][no] = error_reason(e)
                continue
            self.jobs[no] = job
            self.current = job
            self._report["opened"][no] = job.opened()
        return self.current

    def _maybe_finish(self, job: VideoJob) -> None:
        if job.failed or not job.decoded_all or job.in_flight:
            return
        try:
            result = job.finish()
        except Exception as e:  # noqa: BLE001 - e.g. its upload failed: this video alone
            self._fail(job, e)
            return
        del self.jobs[job.no]
        self._report["finished"][job.no] = result

    def _fail(self, job: VideoJob, err: BaseException) -> None:
        job.abort()
        job.failed = True
        self.jobs.pop(job.no, None)
        if self.current is job:
            self.current = None
        self._report["failed"][job.no] = error_reason(err)
        self._report["progress"].pop(job.no, None)

    def _take_report(self) -> dict[str, Any]:
        report, self._report = self._report, _empty_report()
        return report


def _empty_report() -> dict[str, Any]:
    return {"opened": {}, "decoded": [], "finished": {}, "failed": {}, "progress": {}}


def _streamed(task: Any) -> bool:
    return task.problem is None and needs_stream(task.source)


class VideoJob:
    """One video a miner mines: its reader, clip selector and staging shards."""

    def __init__(self, miner: VideoMiner, no: int, task: Any, prefetch: Prefetch | None = None) -> None:
        self.miner, self.no, self.task = miner, no, task
        self.recipe = miner.recipe
        self.video_id, self.path, self.stem = task.video_id, task.path, task.stem
        self.failed = False
        self.decoded_all = False
        self.in_flight = 0  # frames sent to the detector and not yet applied
        self.reader: Any = None
        self.writer: Any = None
        self.frames_log: Any = None
        self.source: Any = None  # the StreamSource of a URL / tar member (one open for every pass)
        self._frames: Iterator[Any] | None = None
        self.frames = 0
        self.rows: list[dict[str, Any]] = []
        self.span_now = 0  # the span (manifest clips column) the selector is working in
        self.segment_first = 0  # position of the current span's first frame among the video's frames
        self.longest_segment = 0  # frames of the longest span mined so far (short-video verdict)
        self.last_pts = 0.0
        try:
            self._open(prefetch)
        except BaseException:
            self.abort()
            raise

    def _open(self, prefetch: Prefetch | None) -> None:
        # deferred: cv2, torchvision at import
        from ..shards.writer import ShardWriter

        task = self.task
        if task.problem is not None:
            if prefetch is not None:
                prefetch.discard()
            raise task.problem
        target: Any = task.source
        if prefetch is not None:
            self.source = target = (
                prefetch.result()
            )  # the prefetch's typed error, if it failed, is this video's
        elif needs_stream(target):  # a listed object's version is known: no request to ask it again
            self.source = target = StreamSource(target, known=task.fingerprint)
        self.reader = open_video(target, self.miner.video_cfg)
        info = self.reader.info
        self.sizes = frame_sizes(self.recipe.detector, self.recipe.mine, int(info.width), int(info.height))
        if self.sizes.decode_max_side is not None:  # the same open video, decoded at that size
            self.reader = self.reader.with_max_side(self.sizes.decode_max_side)
        self.spans = task.spans
        self.source_meta = _source_meta(task, self.source)
        self.info = {
            "width": int(info.width),
            "height": int(info.height),
            "fps": float(info.fps),
            "num_frames": int(info.num_frames),
            "duration": float(info.duration),
        }
        self._frames = iter(self.reader)
        self.selector = StreamingClipSelector(self.recipe.mine)
        staging = self.miner.staging_root / self.stem
        if staging.exists():
            shutil.rmtree(staging)
        staging.mkdir(parents=True)
        self.writer = ShardWriter(staging, self.stem, self.recipe.shards, kind="clip")
        self.frames_log = open(staging / frames_log_name(self.stem), "w", encoding="utf-8")  # noqa: SIM115

    def opened(self) -> dict[str, Any]:
        """What the scheduler learns when the video opens (its fingerprint: a URL's or tar member's)."""
        fingerprint = self.source.fingerprint() if self.source is not None else None
        return {**self.info, "fingerprint": fingerprint, "node_id": self.miner.node.get("node_id", "")}

    def frames_left(self) -> float | None:
        """About how many sampled frames are still to decode (None: the video's length is unknown)."""
        end = self.info["duration"]
        if self.spans:
            end = min(end, self.spans[-1][1]) if end > 0 else self.spans[-1][1]
        if end <= 0 or self.info["fps"] <= 0:
            return None
        rate = min(self.recipe.mine.fps, self.info["fps"]) if self.recipe.mine.fps else self.info["fps"]
        return max(0.0, (end - self.last_pts) * rate)

    # -- decode ------------------------------------------------------------------------------------

    def decode(self, wanted: int) -> _Segment | None:
        """Up to ``wanted`` more frames (frames outside every span skipped, not decoded past the last
        span): a segment, or None when none is left (``decoded_all`` is then set)."""
        assert self._frames is not None, "the job is not open"
        images: list[torch.Tensor] = []
        indices: list[int] = []
        pts: list[float] = []
        spans_of: list[int] = []
        while len(indices) < wanted:
            frame = next(self._frames, None)
            if frame is None:
                self._end_decoding()
                break
            self.last_pts = frame.pts
            span = 0
            if self.spans is not None:
                span = next((k for k, (a, b) in enumerate(self.spans) if a <= frame.pts < b), -1)
                if span < 0:
                    if frame.pts >= self.spans[-1][1]:
                        self._end_decoding()  # past the last span: the rest is never decoded
                        break
                    continue
            images.append(frame.image)
            indices.append(frame.index)
            pts.append(frame.pts)
            spans_of.append(span)
        if not indices:
            return None
        decoded = torch.stack(images)
        for_detector = resize_uint8(decoded, *self.sizes.detect).numpy()
        stored = resize_uint8(decoded, *self.sizes.store).numpy()
        return _Segment(self, for_detector, stored, indices, pts, spans_of)

    def _end_decoding(self) -> None:
        self.decoded_all = True
        self._close_reader()

    # -- detections, clips -------------------------------------------------------------------------

    def apply(self, seg: _Segment, detections: list[list[dict]]) -> None:
        for image, index, t, raw_hands, span in zip(
            seg.stored, seg.indices, seg.pts, detections, seg.spans_of
        ):
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

    def finish(self) -> dict[str, Any]:
        """Write the tail/short clip, close the shards (upload them to an object store); the result the
        scheduler records."""
        self._end_segment()
        longest = self.longest_segment
        windows_possible = longest >= self.recipe.mine.clip_length or (
            self.recipe.mine.short_video == "keep" and longest >= self.recipe.mine.min_frames
        )
        infos = self.writer.close()
        self.writer = None
        self.frames_log.close()
        self.frames_log = None
        shard_of = {key: info.path.name for info in infos for key in info.keys}
        for row in self.rows:
            row["shard"] = shard_of[row["key"]]
        published: dict[str, Any] = {}
        if self.miner.remote:
            staging = self.miner.staging_root / self.stem
            published["published"] = upload_video(staging, self.miner.out, self.stem, self.rows)
            shutil.rmtree(staging, ignore_errors=True)
        return {
            **published,
            "frames": self.frames,
            "clips": len(self.rows),
            "rows": self.rows,
            "too_short": not windows_possible,
            "skip_reason": "" if windows_possible else self._too_short_reason(),
            "duration": self.info["duration"],
            "node": self.miner.node,
        }

    def abort(self) -> None:
        """Drop this video's staged output (it failed, or the run gives up on it)."""
        if self.writer is not None:
            self.writer.abort()
            self.writer = None
        if self.frames_log is not None:
            self.frames_log.close()
            self.frames_log = None
        shutil.rmtree(self.miner.staging_root / self.stem, ignore_errors=True)
        self._close_reader()

    def _end_segment(self) -> None:
        """Write the current span's tail/short clip; the next frame starts a new span and selector."""
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
        # Closing the frame generator now runs the decoder's cleanup (its container is closed) instead
        # of leaving it to garbage collection.
        if self._frames is not None and hasattr(self._frames, "close"):
            self._frames.close()
        self._frames = iter(())
        if self.reader is not None:
            self.reader.close()  # a container opened and never decoded (the video failed before)
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
            "rule": self.miner.rule,
            "detector": dict(self.miner.detector),
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

    def detect(self, frames: list[np.ndarray], segments: list[list[Any]]) -> list[list[dict[str, Any]]]:
        """Detections for one batch: ``frames`` holds one (n, 3, H, W) array per video segment (sizes may
        differ between videos), ``segments`` their ``[job no, video id, frame indices]``; one list of
        hands per frame, in order. One detector call for the whole batch, unless the backend needs the
        video id (``needs_video_id``: one call per segment)."""
        t0 = time.perf_counter()
        # the object-store arrays are read-only
        tensors = [torch.from_numpy(np.array(f)) for f in frames]
        hands: list[list[Any]] = []
        if getattr(self.detector, "needs_video_id", False) or len(tensors) == 1:
            for batch, (_, video_id, indices) in zip(tensors, segments):
                hands += self.detector.detect(batch, video_id=video_id, frame_indices=indices)
        else:
            per_frame = [image for batch in tensors for image in batch]
            hands = self.detector.detect(per_frame, frame_indices=[i for _, _, ix in segments for i in ix])
        self.busy_seconds += time.perf_counter() - t0
        self.frames += sum(len(ix) for _, _, ix in segments)
        return [[h.to_dict() for h in per_frame] for per_frame in hands]

    def stats(self) -> dict[str, float]:
        return {"busy_seconds": self.busy_seconds, "frames": self.frames}
