"""The event loop of a mining run: miner and detector actors driven with ``ray.wait``.

See :mod:`maskahand.mine.pipeline` for the design; this module holds the scheduler it runs, the resource
fitting and what happens when a video finishes (publish its shards, then its ledger line) or fails.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core import storage
from ..core.config import MineRecipe
from .ledger import Ledger, VideoRecord, discard_video, error_reason, publish_video
from .sources import VideoTask

log = logging.getLogger(__name__)


class MineError(RuntimeError):
    """A mining run cannot start (no videos, an output mined with another config, ...)."""


@dataclass
class _Job:
    """A video handed to a miner, until it is finished or failed."""

    task: VideoTask
    started: float
    opened: bool = False
    decoded: bool = False  # its miner has decoded all of it
    frames: int = 0
    clips: int = 0


@dataclass
class _Slot:
    """One miner actor and the videos handed to it."""

    miner: Any
    jobs: dict[int, _Job] = field(default_factory=dict)  # job no -> job, in the order handed
    gen: int = 0  # bumps when the miner is replaced or retired: results of the old one are ignored
    decoding: bool = False  # a next_batch call is in flight
    drained: bool = True  # the miner has nothing to decode until it is handed more
    left: float | None = None  # about how many frames the video it decodes has left (None: unknown)
    batches: dict[int, list[int]] = field(default_factory=dict)  # decoded, not yet applied: job nos
    node_id: str = ""  # the Ray node the miner runs on (reported when it opens a video)
    retired: bool = False  # its node left the cluster: no replacement, no more videos
    # a miner call failed and Ray has not yet said whether its node left: (deadline, the error, the jobs
    # that call was working on)
    awaiting: tuple[float, BaseException, list[int]] | None = None

    def unopened(self) -> int:
        return sum(not job.opened for job in self.jobs.values())


@dataclass
class _Detectors:
    actors: list[Any]
    load: list[int] = field(default_factory=list)

    def pick(self) -> int:
        if not self.load:
            self.load = [0] * len(self.actors)
        i = min(range(len(self.actors)), key=lambda k: self.load[k])
        self.load[i] += 1
        return i

    def replace_dead(self, i: int, dead: Any, new_actor: Callable[[], Any]) -> bool:
        """Replace actor ``i`` after ``dead`` failed, unless it was already replaced.

        Every batch in flight on a dead actor fails; only the first failure replaces it. A second
        replacement would leak the first (holding its GPU, so the second could never start).
        """
        if self.actors[i] is not dead:
            return False
        self.actors[i] = new_actor()
        return True


def _resources(recipe: MineRecipe, n_videos: int) -> tuple[int, int, dict[str, Any], dict[str, Any]]:
    """(detector actors, miner actors, miner options, detector options) fitted to the cluster."""
    # deferred: ray at import
    import ray

    w = recipe.workers
    total = ray.cluster_resources()
    gpus = float(total.get("GPU", 0.0))
    cpus = float(total.get("CPU", 1.0))
    use_gpu = gpus > 0 and recipe.detector.device != "cpu"
    if w.detector_actors is not None:
        n_det = w.detector_actors
    else:
        n_det = max(1, int(gpus // w.gpus_per_detector)) if use_gpu else 1
    if w.decoders is not None:
        n_miners = w.decoders
    else:
        # At least two: while one miner drains a finished video and opens the next, the other keeps the
        # detectors fed (with one, detectors idle at every video boundary; short videos make that costly).
        n_miners = max(2, int((cpus - n_det * w.cpus_per_detector) // max(w.cpus_per_decoder, 1e-3)))
    n_miners = max(1, min(n_miners, n_videos))
    need = n_miners * w.cpus_per_decoder + n_det * w.cpus_per_detector
    scale = min(1.0, cpus / need) if need > 0 else 1.0
    if scale < 1.0:
        log.info(
            "asked for %.1f CPUs on a cluster with %.1f: scaling actor CPU requests by %.2f",
            need,
            cpus,
            scale,
        )
    miner_opts: dict[str, Any] = {"num_cpus": w.cpus_per_decoder * scale}
    det_opts: dict[str, Any] = {"num_cpus": w.cpus_per_detector * scale}
    if w.decoder_resources:
        miner_opts["resources"] = dict(w.decoder_resources)
    if w.detector_resources:
        det_opts["resources"] = dict(w.detector_resources)
    if use_gpu:
        det_opts["num_gpus"] = w.gpus_per_detector
    return n_det, n_miners, miner_opts, det_opts


def run_scheduler(
    recipe: MineRecipe,
    out: str | Path,
    todo: list[VideoTask],
    ledger: Ledger,
    progress: bool,
    fault: Callable[[str, str], None] | None,
) -> dict[str, float]:
    """Mine ``todo`` into ``out``; returns frames mined, start-up seconds and steady-state frames/s."""
    run = _Scheduler(recipe, out, todo, ledger, progress, fault)
    try:
        run.start()
        run.loop()
    finally:
        run.close()
    end = time.perf_counter()
    ready = run.t_ready or end
    return {
        "frames": run.frames_total,
        "startup_seconds": ready - run.t_start,  # actors started, detector loaded, first batch decoded
        "steady_frames_per_second": run.frames_total / (end - ready) if end > ready else 0.0,
    }


class _Scheduler:
    """Drives miner and detector actors with ``ray.wait``; one instance per run."""

    def __init__(
        self,
        recipe: MineRecipe,
        out: str | Path,
        todo: list[VideoTask],
        ledger: Ledger,
        progress: bool,
        fault: Callable[[str, str], None] | None,
    ) -> None:
        # deferred: ray, tqdm at import
        import ray
        from tqdm import tqdm

        # deferred: numpy, torch at import
        from .worker import DetectorWorker, VideoMiner

        self.recipe, self.out, self.ledger, self.fault = recipe, out, ledger, fault
        self.queue = deque(todo)
        self.next_job = 0
        n_det, self.n_miners, self.miner_opts, self.det_opts = _resources(recipe, len(todo))
        self.miner_cls = ray.remote(VideoMiner)
        self.det_cls = ray.remote(DetectorWorker)
        self.dets = _Detectors([self.new_detector() for _ in range(n_det)])
        self.detector_info: Any = self.dets.actors[0].describe.remote()  # a ref until start() reads it
        # miners start while the detector loads: Ray gives them its description once it is there
        self.slots = [_Slot(self.new_miner()) for _ in range(self.n_miners)]
        self.refs: dict[Any, tuple[str, int, int, Any]] = {}  # ref -> (kind, slot, gen, extra)
        # a video's frames are handed on when the one before it has about this many frames left to decode
        self.lookahead = recipe.detector.batch_size * recipe.workers.max_inflight_batches
        self.frames_total = 0
        self.clips_total = 0
        self.t_start = time.perf_counter()
        self.t_ready: float | None = None
        done = len(ledger) - sum(t.video_id in ledger.records for t in todo)  # finished by earlier runs
        self.bar = tqdm(
            total=done + len(todo),
            initial=done,
            unit="video",
            desc="mine",
            disable=not progress,
            dynamic_ncols=True,
        )

    def new_detector(self) -> Any:
        return self.det_cls.options(**self.det_opts).remote(self.recipe.detector)

    def new_miner(self) -> Any:
        # the driver's storage variables go as an argument: a worker started earlier may lack them
        return self.miner_cls.options(**self.miner_opts).remote(
            self.recipe, str(self.out), self.detector_info, storage.worker_env()
        )

    def start(self) -> None:
        # deferred: ray at import
        import ray
        from ray.exceptions import RayError

        try:
            self.detector_info = ray.get(self.detector_info)
        except RayError as e:
            backend = self.recipe.detector.backend
            raise MineError(f"the {backend} detector could not be built: {error_reason(e)}") from e
        for i in range(len(self.slots)):
            self.pump(i)

    def close(self) -> None:
        # deferred: ray at import
        import ray

        self.bar.close()
        # a miner staging for an object store removes its node-local folder (a killed one cannot)
        closing = [s.miner.close.remote() for s in self.slots if not s.retired]
        if closing:
            ray.wait(closing, num_returns=len(closing), timeout=10)
        for actor in [s.miner for s in self.slots] + self.dets.actors:
            ray.kill(actor)

    # -- per-slot steps ----------------------------------------------------------------------------

    def hand_out(self, i: int) -> list[tuple[int, VideoTask]]:
        """The video to queue on miner ``i`` with its next call, if it should get one now: when it has
        nothing left to decode, or its current video is about to end (then the next one's frames fill the
        same batches, and a URL is prefetched meanwhile). One waits on a miner at most, so a long video
        never waits behind another while a miner is idle."""
        slot = self.slots[i]
        if not self.queue or slot.unopened() > 0:
            return []
        if not slot.drained and (slot.left is None or slot.left > self.lookahead):
            return []
        no, self.next_job = self.next_job, self.next_job + 1
        task = self.queue.popleft()
        slot.jobs[no] = _Job(task, time.perf_counter())
        return [(no, task)]

    def pump(self, i: int) -> None:
        """Ask miner ``i`` for its next batch (handing it a video if it is time), unless it is already
        decoding, holds max_inflight_batches undetected batches, or has nothing to decode."""
        slot = self.slots[i]
        if slot.retired or slot.awaiting is not None or slot.decoding:
            return
        if len(slot.batches) >= self.recipe.workers.max_inflight_batches:
            return
        tasks = self.hand_out(i)
        if slot.drained and not tasks:
            return
        meta_ref, frames_ref = slot.miner.next_batch.options(num_returns=2).remote(tasks)
        self.refs[meta_ref] = ("decode", i, slot.gen, frames_ref)
        slot.decoding = True

    def pump_idle(self) -> None:
        for k in range(len(self.slots)):
            self.pump(k)

    def take_report(self, i: int, report: dict[str, Any]) -> None:
        """What the miner says happened to its videos: opened, failed, finished, frames and clips so far."""
        slot = self.slots[i]
        for no, info in report["opened"].items():
            job = slot.jobs[no]
            job.opened = True
            if info.get("fingerprint") is not None:  # a URL or tar member: taken when the miner opened it
                job.task.fingerprint = info["fingerprint"]
            slot.node_id = str(info.get("node_id") or slot.node_id)
        # reports of a miner's calls can arrive out of order (ray.wait): a video may already be finished
        for no in report["decoded"]:
            if no in slot.jobs:
                slot.jobs[no].decoded = True
        for no, (frames, clips) in report["progress"].items():
            if no in slot.jobs:
                self.count(slot.jobs[no], frames, clips)
        for no, reason in report["failed"].items():
            self.record_failed(slot.jobs.pop(no), reason)
        for no, result in report["finished"].items():
            job = slot.jobs.pop(no)
            self.count(job, result["frames"], result["clips"])
            try:
                _record_finished(
                    self.out, self.ledger, job.task, result, time.perf_counter() - job.started, self.fault
                )
            except Exception as e:
                if self.fault is not None:
                    raise  # a simulated crash: stop like a killed process would
                self.record_failed(job, error_reason(e))
                continue
            self.bar.update(1)

    def record_failed(self, job: _Job, reason: str) -> None:
        task = job.task
        discard_video(self.out, task.stem)
        rec = VideoRecord(
            task.video_id,
            task.path,
            "failed",
            reason,
            frames=job.frames,
            seconds=time.perf_counter() - job.started,
            fingerprint=task.fingerprint or {},
        )
        self.ledger.append(rec)
        log.warning("%s: failed: %s", task.video_id, reason)
        self.bar.update(1)

    def fail(self, i: int, err: BaseException, touched: list[int]) -> None:
        """A call to miner ``i`` failed while working on the videos ``touched``."""
        # deferred: ray at import
        from ray.exceptions import RayActorError

        slot = self.slots[i]
        if isinstance(err, RayActorError) and _names_actor(err, slot.miner):
            verdict = _node_verdict(slot.miner, slot.node_id)
            if verdict == "unknown":  # decided in the loop (check_verdicts) once Ray knows
                slot.awaiting = (time.monotonic() + NODE_VERDICT_TIMEOUT_S, err, touched)
                return
            if verdict == "lost":
                self.requeue_lost(i, error_reason(err))
                return
        self.fail_videos(i, err, touched)

    def check_verdicts(self) -> None:
        """Decide the videos of miners that failed while Ray still listed their node alive."""
        for i, slot in enumerate(self.slots):
            if slot.awaiting is None:
                continue
            deadline, err, touched = slot.awaiting
            verdict = _node_verdict(slot.miner, slot.node_id)
            if verdict == "unknown" and time.monotonic() < deadline:
                continue
            slot.awaiting = None
            if verdict == "lost":
                self.requeue_lost(i, error_reason(err))
            else:
                if verdict == "unknown":
                    log.warning(
                        "no verdict from Ray on node %s within %.0f s: counting the video as failed",
                        slot.node_id,
                        NODE_VERDICT_TIMEOUT_S,
                    )
                self.fail_videos(i, err, touched)

    def fail_videos(self, i: int, err: BaseException, touched: list[int]) -> None:
        """The videos ``touched`` failed (not their node: e.g. a decoder crash on a bad video, or the
        detector of their batch died). Miner ``i`` is replaced by a fresh one; the other videos it held are
        not at fault and go back to the queue."""
        # deferred: ray at import
        import ray

        slot = self.slots[i]
        ray.kill(slot.miner)
        slot.miner = self.new_miner()
        jobs = self.reset(slot)
        reason = error_reason(err)
        for no, job in jobs.items():
            if no in touched:
                self.record_failed(job, reason)
        self.requeue([job for no, job in jobs.items() if no not in touched])
        self.pump_idle()

    def requeue_lost(self, i: int, reason: str) -> None:
        """The miner's node left the cluster: its videos are not at fault, surviving miners redo them.

        The slot retires instead of getting a new miner: its resources went with the node, and a replacement
        that no node can place would wait forever (and the run with it).
        """
        slot = self.slots[i]
        jobs = self.reset(slot)
        slot.retired = True
        for job in jobs.values():
            log.warning(
                "%s: lost with its miner's node %s (%s): mining it again",
                job.task.video_id,
                slot.node_id,
                reason,
            )
        self.requeue(list(jobs.values()))
        if all(s.retired for s in self.slots):
            raise MineError("every miner's node left the Ray cluster; rerun the same command to resume")
        self.pump_idle()

    def reset(self, slot: _Slot) -> dict[int, _Job]:
        """Forget what the slot's (dead or replaced) miner held; returns its videos."""
        jobs, slot.jobs = slot.jobs, {}
        slot.gen += 1
        slot.decoding, slot.drained, slot.left, slot.batches = False, True, None, {}
        return jobs

    def requeue(self, jobs: list[_Job]) -> None:
        """Back to the front of the queue, in the order they were handed (their frames mined so far are
        mined again)."""
        for job in jobs:
            discard_video(self.out, job.task.stem)
            self.count(job, 0, 0)
        self.queue.extendleft(job.task for job in reversed(jobs))

    def count(self, job: _Job, frames: int, clips: int) -> None:
        self.frames_total += frames - job.frames
        self.clips_total += clips - job.clips
        job.frames, job.clips = frames, clips
        elapsed = max(time.perf_counter() - self.t_start, 1e-6)
        self.bar.set_postfix_str(
            f"{self.frames_total / elapsed:.1f} frames/s, {self.clips_total} clips", False
        )

    # -- the event loop ----------------------------------------------------------------------------

    def loop(self) -> None:
        # deferred: ray at import
        import ray
        from ray.exceptions import RayActorError, RayError

        while True:
            waiting = any(s.awaiting for s in self.slots)
            if not self.refs and not waiting:
                break
            if self.refs:
                ready, _ = ray.wait(list(self.refs), num_returns=1, timeout=0.1 if waiting else None)
            else:
                ready = []
                time.sleep(0.1)
            if waiting:
                self.check_verdicts()
            if not ready:
                continue
            ref = ready[0]
            kind, i, gen, extra = self.refs.pop(ref)
            if kind == "add":
                self.dets.load[extra[1]] -= 1
            slot = self.slots[i]
            stale = gen != slot.gen or slot.awaiting is not None
            try:
                value = ray.get(ref)
            except RayError as e:
                if kind == "add" and isinstance(e, RayActorError) and not _names_actor(e, slot.miner):
                    _, d, dead = extra
                    self.dets.replace_dead(d, dead, self.new_detector)  # the batch's videos fail below
                if not stale:
                    self.fail(i, e, self.touched(slot, kind, extra))
                continue
            if stale:
                continue
            if kind == "decode":
                self.decoded(i, value, extra)
            else:
                slot.batches.pop(extra[0], None)
                self.take_report(i, value)
            self.pump(i)

    def touched(self, slot: _Slot, kind: str, extra: Any) -> list[int]:
        """The video a failed call is blamed on, one per failure as when a miner held one video: the first
        still unfinished video of the batch (add_detections), or the one being decoded or opened
        (next_batch: the first video handed that is not decoded yet). The miner's other videos are mined
        again; a video that really brings its miner down does it again then, and fails alone."""
        if kind == "add":
            candidates = [no for no in slot.batches.get(extra[0], []) if no in slot.jobs]
        else:
            candidates = [no for no, job in slot.jobs.items() if not job.decoded]
        return candidates[:1]

    def decoded(self, i: int, report: dict[str, Any], frames_ref: Any) -> None:
        """A miner's batch is decoded: send it to a detector, and its detections (by reference, not through
        here) back to the miner."""
        slot = self.slots[i]
        slot.decoding = False
        slot.drained, slot.left = bool(report["drained"]), report["left"]
        batch = report["batch"]
        if batch is not None:
            self.t_ready = self.t_ready or time.perf_counter()
            slot.batches[batch] = [no for no, _, _ in report["segments"]]
            d = self.dets.pick()
            det_ref = self.dets.actors[d].detect.remote(frames_ref, report["segments"])
            ref = slot.miner.add_detections.remote(batch, det_ref)
            self.refs[ref] = ("add", i, slot.gen, (batch, d, self.dets.actors[d]))
        self.take_report(i, report)


# How long to wait, after a miner's RayActorError, for Ray to say whether its node left. A node that vanishes
# is declared dead only when its health checks run out (Ray's defaults: several seconds for a killed raylet,
# about a minute for an unreachable machine); a miner process that crashed is marked dead at once.
NODE_VERDICT_TIMEOUT_S = 90.0


def _names_actor(err: BaseException, actor: Any) -> bool:
    """Is this actor error about ``actor`` (or about an actor it does not name)? A detector that died while
    the miner waited on its batch reaches the miner's call as the detector's error: not the miner's node."""
    named = getattr(err, "actor_id", None)
    return named is None or named == actor._actor_id.hex()


def _node_verdict(actor: Any, node_id: str) -> str:
    """After a miner's RayActorError: "lost" (its node left the cluster), "crashed" (the miner itself died,
    e.g. a decoder crash on a bad video) or "unknown" (ask again later).

    A killed node's miner fails first (ActorUnavailableError, ActorDiedError) while the GCS still lists
    both node and actor alive, until the node's health checks run out. Deciding then would fail a video
    that no fault of its own interrupted, so the scheduler asks again until the GCS has a verdict: the
    node is dead (lost), or the actor is dead on a live node (crashed; the GCS marks a node dead before its
    actors, so this order cannot be misread).
    """
    row = _actor_row(actor)  # read before the node: a node is marked dead before its actors
    # the table's node serves a miner that died before its start() said where it runs
    node = node_id or str(row.get("Address", {}).get("NodeID", ""))
    if _node_lost(node):
        return "lost"
    if row.get("State", "DEAD") == "DEAD":  # no row: the actor table cannot be read; the node decided
        return "crashed"
    return "unknown"


def _actor_row(actor: Any) -> dict[str, Any]:
    """The actor's row in the GCS actor table (``State``: ALIVE, RESTARTING, DEAD, ...; ``Address.NodeID``),
    or {} when it cannot be read."""
    try:
        # deferred: ray at import
        from ray._private.state import actors

        return dict(actors(actor_id=actor._actor_id.hex()))
    except Exception:  # noqa: BLE001 - private Ray API: without it, a lost video is failed instead
        return {}


def _node_lost(node_id: str) -> bool:
    """Has the Ray node ``node_id`` left the cluster (dead or gone)? False when unknown."""
    # deferred: ray at import
    import ray

    if not node_id:
        return False
    alive = {n["NodeID"]: n["Alive"] for n in ray.nodes()}
    return not alive.get(node_id, False)


def _record_finished(
    out: str | Path,
    ledger: Ledger,
    task: VideoTask,
    result: dict[str, Any],
    seconds: float,
    fault: Callable[[str, str], None] | None,
) -> None:
    if "published" in result:  # an object-store output: the miner uploaded the video itself
        shards = list(result["published"])
    else:
        shards = publish_video(out, task.stem, result["rows"])
    if fault is not None:
        fault("published", task.video_id)
    too_short = result["too_short"]
    reason = result["skip_reason"]
    ledger.append(
        VideoRecord(
            task.video_id,
            task.path,
            "skipped" if too_short else "ok",
            reason,
            frames=result["frames"],
            clips=result["clips"],
            seconds=seconds,
            duration=result["duration"],
            shards=shards,
            fingerprint=task.fingerprint or {},
            node=result.get("node", {}),
        )
    )
    if fault is not None:
        fault("recorded", task.video_id)
