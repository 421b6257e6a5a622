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
from ..video.source import needs_stream
from .ledger import Ledger, VideoRecord, discard_video, publish_video
from .sources import VideoTask

log = logging.getLogger(__name__)


class MineError(RuntimeError):
    """A mining run cannot start (no videos, an output mined with another config, ...)."""


@dataclass
class _Slot:
    """One miner actor and the video it is working on."""

    miner: Any
    task: VideoTask | None = None
    # the video this miner gets next, handed to it early to be prefetched (a URL or tar member; its
    # task is here, not in the queue, until it starts: see _Scheduler.assign)
    ahead: VideoTask | None = None
    gen: int = 0  # bumps with every assignment: results of an abandoned video are ignored
    started: float = 0.0
    decoding: bool = False
    eof: bool = False
    batches: int = 0
    applied: int = 0
    finishing: bool = False
    frames: int = 0
    clips: int = 0
    duration: float = 0.0
    node_id: str = ""  # the Ray node the miner runs on (from its start())
    retired: bool = False  # its node left the cluster: no replacement, no more videos
    # the miner failed and Ray has not yet said whether its node left: (deadline, the error)
    awaiting: tuple[float, BaseException] | None = None


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


def _error_reason(err: BaseException) -> str:
    cause = getattr(err, "cause", None)
    if isinstance(cause, BaseException):
        err = cause
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[-1] if text else ''}"[:500]


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
        n_det, n_miners, self.miner_opts, self.det_opts = _resources(recipe, len(todo))
        self.miner_cls = ray.remote(VideoMiner)
        self.det_cls = ray.remote(DetectorWorker)
        self.dets = _Detectors([self.new_detector() for _ in range(n_det)])
        self.slots = [_Slot(self.new_miner()) for _ in range(n_miners)]
        self.refs: dict[Any, tuple[str, int, int, Any]] = {}  # ref -> (kind, slot, gen, extra)
        self.frames_total = 0
        self.clips_total = 0
        self.t_start = time.perf_counter()
        self.t_ready: float | None = None
        self.detector_info: dict[str, str] = {}
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
            self.recipe, str(self.out), storage.worker_env()
        )

    def start(self) -> None:
        # deferred: ray at import
        import ray
        from ray.exceptions import RayError

        try:
            self.detector_info = ray.get(self.dets.actors[0].describe.remote())
        except RayError as e:
            backend = self.recipe.detector.backend
            raise MineError(f"the {backend} detector could not be built: {_error_reason(e)}") from e
        for i in range(len(self.slots)):
            if self.has_work(i):
                self.assign(i)

    def close(self) -> None:
        # deferred: ray at import
        import ray

        self.bar.close()
        for actor in [s.miner for s in self.slots] + self.dets.actors:
            ray.kill(actor)

    # -- per-slot steps ----------------------------------------------------------------------------

    def has_work(self, i: int) -> bool:
        """Is there a video slot ``i`` may start: its own next one, the queue's, or another's next one?"""
        return bool(self.queue) or any(s.ahead is not None for s in self.slots)

    def next_task(self, i: int) -> VideoTask:
        """The video slot ``i`` starts now: the one it was handed ahead, else the queue's first, else (the
        queue is empty: the run's tail) one handed ahead to a busy miner, rather than idling."""
        if self.slots[i].ahead is None and self.queue:
            return self.queue.popleft()
        # its own, else another's (that miner drops its prefetch when it starts another video)
        holder = self.slots[i] if self.slots[i].ahead is not None else next(s for s in self.slots if s.ahead)
        task, holder.ahead = holder.ahead, None
        assert task is not None
        return task

    def take_ahead(self) -> VideoTask | None:
        """The queue's first video, to hand to a miner ahead of time, when it is worth prefetching (a URL
        or tar member that can be opened; a local file is opened as fast as it can be asked for)."""

        if not self.recipe.workers.prefetch or not self.queue:
            return None
        task = self.queue[0]
        if task.problem is not None or not needs_stream(task.source):
            return None
        return self.queue.popleft()

    def assign(self, i: int) -> None:
        slot = self.slots[i]
        task = self.next_task(i)
        slot.ahead = self.take_ahead()
        slot.task, slot.gen = task, slot.gen + 1
        slot.started = time.perf_counter()
        slot.decoding = slot.eof = slot.finishing = False
        slot.batches = slot.applied = slot.frames = slot.clips = 0
        ref = slot.miner.start.remote(
            task.video_id, task.path, task.stem, self.detector_info, task, slot.ahead
        )
        self.refs[ref] = ("start", i, slot.gen, None)

    def release(self, i: int) -> None:
        self.slots[i].task = None
        self.slots[i].gen += 1
        self.bar.update(1)
        if self.has_work(i) and not self.slots[i].retired:
            self.assign(i)

    def fail(self, i: int, err: BaseException) -> None:
        # deferred: ray at import
        from ray.exceptions import RayActorError

        slot = self.slots[i]
        assert slot.task is not None
        if isinstance(err, RayActorError) and _names_actor(err, slot.miner):
            verdict = _node_verdict(slot.miner, slot.node_id)
            if verdict == "unknown":  # decided in the loop (check_verdicts) once Ray knows
                slot.awaiting = (time.monotonic() + NODE_VERDICT_TIMEOUT_S, err)
                return
            if verdict == "lost":
                self.requeue_lost(i, _error_reason(err))
                return
        self.fail_video(i, err)

    def check_verdicts(self) -> None:
        """Decide the videos of miners that failed while Ray still listed their node alive."""
        for i, slot in enumerate(self.slots):
            if slot.awaiting is None:
                continue
            deadline, err = slot.awaiting
            verdict = _node_verdict(slot.miner, slot.node_id)
            if verdict == "unknown" and time.monotonic() < deadline:
                continue
            slot.awaiting = None
            if verdict == "lost":
                self.requeue_lost(i, _error_reason(err))
            else:
                if verdict == "unknown":
                    log.warning(
                        "no verdict from Ray on node %s within %.0f s: counting the video as failed",
                        slot.node_id,
                        NODE_VERDICT_TIMEOUT_S,
                    )
                self.fail_video(i, err)

    def fail_video(self, i: int, err: BaseException) -> None:
        """The video failed (not its node): record it, and give the slot a fresh miner if this one died."""
        # deferred: ray at import
        import ray
        from ray.exceptions import RayActorError

        slot = self.slots[i]
        task = slot.task
        assert task is not None
        reason = _error_reason(err)
        if isinstance(err, RayActorError):
            # The miner (e.g. a decoder crash) or a detector it waited on died: use a fresh miner.
            ray.kill(slot.miner)
            slot.miner = self.new_miner()
        else:
            slot.miner.abort.remote()
        discard_video(self.out, task.stem)
        seconds = time.perf_counter() - slot.started
        rec = VideoRecord(
            task.video_id,
            task.path,
            "failed",
            reason,
            frames=slot.frames,
            seconds=seconds,
            fingerprint=task.fingerprint or {},
        )
        self.ledger.append(rec)
        log.warning("%s: failed: %s", task.video_id, reason)
        self.release(i)

    def requeue_lost(self, i: int, reason: str) -> None:
        """The miner's node left the cluster: the video is not at fault, a surviving miner redoes it.

        The slot retires instead of getting a new miner: its resources went with the node, and a replacement
        that no node can place would wait forever (and the run with it).
        """
        slot = self.slots[i]
        task = slot.task
        assert task is not None
        discard_video(self.out, task.stem)
        slot.task, slot.retired = None, True
        slot.gen += 1
        if slot.ahead is not None:  # back to the queue, in order, for the surviving miners
            self.queue.appendleft(slot.ahead)
            slot.ahead = None
        self.queue.appendleft(task)
        log.warning(
            "%s: lost with its miner's node %s (%s): mining it again", task.video_id, slot.node_id, reason
        )
        live = [k for k, s in enumerate(self.slots) if not s.retired]
        if not live:
            raise MineError("every miner's node left the Ray cluster; rerun the same command to resume")
        for k in live:
            if self.slots[k].task is None and self.has_work(k):
                self.assign(k)

    def pump(self, i: int) -> None:
        """Ask the miner for its next batch unless it already holds max_inflight_batches undetected."""
        slot = self.slots[i]
        if slot.task is None or slot.decoding or slot.eof or slot.finishing:
            return
        if slot.batches - slot.applied >= self.recipe.workers.max_inflight_batches:
            return
        meta_ref, frames_ref = slot.miner.next_batch.options(num_returns=2).remote()
        self.refs[meta_ref] = ("decode", i, slot.gen, frames_ref)
        slot.decoding = True

    def maybe_finish(self, i: int) -> None:
        slot = self.slots[i]
        if slot.eof and not slot.decoding and slot.applied == slot.batches and not slot.finishing:
            slot.finishing = True
            self.refs[slot.miner.finish.remote()] = ("finish", i, slot.gen, None)

    def count(self, slot: _Slot, frames: int, clips: int) -> None:
        self.frames_total += frames - slot.frames
        self.clips_total += clips - slot.clips
        slot.frames, slot.clips = frames, clips
        elapsed = max(time.perf_counter() - self.t_start, 1e-6)
        self.bar.set_postfix_str(f"{self.frames_total / elapsed:.1f} frames/s, {self.clips_total} clips")

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
            if kind == "detect":
                self.dets.load[extra[0]] -= 1
            slot = self.slots[i]
            stale = gen != slot.gen or slot.task is None or slot.awaiting is not None
            try:
                value = ray.get(ref)
            except RayError as e:
                if kind == "detect" and isinstance(e, RayActorError):
                    d, dead = extra
                    self.dets.replace_dead(d, dead, self.new_detector)  # its add_detections fails the video
                if not stale and kind != "detect":
                    self.fail(i, e)
                continue
            if stale or kind == "detect":
                continue
            self.handle(kind, i, gen, extra, value)

    def handle(self, kind: str, i: int, gen: int, extra: Any, value: Any) -> None:
        slot = self.slots[i]
        task = slot.task
        assert task is not None
        if kind == "start":
            if value.get("fingerprint") is not None:  # a URL or tar member: taken when the miner opened it
                task.fingerprint = value["fingerprint"]
            slot.duration = float(value["duration"])
            slot.node_id = str(value.get("node", {}).get("node_id", ""))
            self.pump(i)
        elif kind == "decode":
            slot.decoding = False
            self.t_ready = self.t_ready or time.perf_counter()
            if value["eof"]:
                slot.eof = True
                self.maybe_finish(i)
                return
            slot.batches += 1
            d = self.dets.pick()
            det_ref = self.dets.actors[d].detect.remote(extra, task.video_id, value["indices"])
            self.refs[det_ref] = ("detect", i, gen, (d, self.dets.actors[d]))
            self.refs[slot.miner.add_detections.remote(value["batch"], det_ref)] = ("add", i, gen, None)
            self.pump(i)  # decode the next batch while this one is being detected
        elif kind == "add":
            slot.applied += 1
            self.count(slot, value["frames"], value["clips"])
            self.pump(i)
            self.maybe_finish(i)
        elif kind == "finish":
            self.count(slot, value["frames"], value["clips"])
            try:
                _record_finished(
                    self.out, self.ledger, task, value, time.perf_counter() - slot.started, self.fault
                )
            except Exception as e:
                if self.fault is not None:
                    raise  # a simulated crash: stop like a killed process would
                self.fail(i, e)
                return
            self.release(i)


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
