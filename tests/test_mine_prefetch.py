"""The miner's prefetch of its next object-store video (``workers.prefetch``) and its batches that hold
several videos (``workers.pack_videos``): same outputs as without them, a failure recorded for its own
video, and a listed object read with one request.

Real components: moto's S3 server on 127.0.0.1, real H.264 videos, the real miner, Ray for the run.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import pytest

from maskahand.core import storage
from maskahand.core.config import MineRecipe
from maskahand.core.configbase import apply_overrides

N_VIDEOS = 6
FRAMES = 12  # at 5 fps: one short clip each (mine.short_video=keep)
DETECTOR = {"name": "test", "version": "0"}  # what the clips record of the detector
CONTACT = {"box": [0.2, 0.2, 0.6, 0.7], "state": "contact", "score": 0.995}


def write_video(path: Path, seed: int) -> None:
    """A tiny real H.264 video whose pixels differ from every other seed's."""
    import av
    import numpy as np

    yy, xx = np.mgrid[0:48, 0:64]
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=5, options={"preset": "ultrafast"})
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        for i in range(FRAMES):
            t = 11 * seed + 3 * i
            image = np.stack(
                [(xx * (seed + 1) + t) % 256, (yy * 3 + t) % 256, (xx + yy + 7 * seed) % 256], -1
            )
            for p in s.encode(av.VideoFrame.from_ndarray(image.astype(np.uint8), format="rgb24")):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("prefetch-videos")
    paths = [folder / f"v{k}.mp4" for k in range(N_VIDEOS)]
    for k, p in enumerate(paths):
        write_video(p, k)
    return paths


def upload(videos: list[Path], prefix: str) -> None:
    for p in videos:
        storage.upload_file(p, storage.join(prefix, p.name))


def listed_tasks_of(prefix: str) -> list[Any]:
    """The tasks ``mine`` makes of a listed prefix (each with its object's size and ETag)."""
    from maskahand.mine.sources import discover_inputs

    return discover_inputs(prefix + "/")


def listed_tasks(prefix: str) -> list[Any]:
    tasks = listed_tasks_of(prefix)
    assert [t.video_id for t in tasks] == [f"v{k}.mp4" for k in range(N_VIDEOS)]
    return tasks


# --- the miner alone (no Ray): what a prefetched, packed stream of videos mines -------------------------------


def mine_stream(miner: Any, tasks: list[Any], hand_every: int = 1) -> dict[str, dict[str, Any]]:
    """``tasks`` through one :class:`VideoMiner` as the scheduler drives it (a video handed with every
    ``hand_every``-th ``next_batch``; all at once with 0), every frame given a contact. Per video id: the
    digest of its frames sent to the detector, its clip rows and fingerprint; or the reason it failed."""
    digests: dict[int, Any] = {}
    opened: dict[int, Any] = {}
    got: dict[int, dict[str, Any]] = {}

    def take(report: dict[str, Any]) -> None:
        opened.update(report["opened"])
        for no, reason in report["failed"].items():
            got[no] = {"failed": reason}
        for no, result in report["finished"].items():
            got[no] = {
                "pixels": digests[no].hexdigest(),
                "rows": result["rows"],
                "fingerprint": opened[no]["fingerprint"],
            }

    numbered = list(enumerate(tasks))
    calls = 0
    while True:
        if hand_every == 0:
            hand, numbered = numbered, []
        else:
            hand, numbered = (numbered[:1], numbered[1:]) if calls % hand_every == 0 else ([], numbered)
        calls += 1
        report, frames = miner.next_batch(hand)
        take(report)
        if frames is None:
            if report["drained"] and not numbered:
                break
            continue
        for array, (no, _, indices) in zip(frames, report["segments"]):
            assert len(array) == len(indices)
            digests.setdefault(no, hashlib.sha256()).update(array.tobytes())
        n = sum(len(indices) for _, _, indices in report["segments"])
        take(miner.add_detections(report["batch"], [[CONTACT] for _ in range(n)]))
    return {tasks[no].video_id: result for no, result in got.items()}


def test_prefetched_and_packed_videos_are_each_videos_own_and_a_failure_is_its_own(
    videos, s3_bucket, tmp_path
):
    from maskahand.mine.worker import VideoMiner

    prefix = storage.join(s3_bucket, "videos")
    upload(videos, prefix)
    tasks = listed_tasks(prefix)
    plain_recipe = apply_overrides(
        MineRecipe(), ["mine.frame_max_side=64", "workers.prefetch=false", "workers.pack_videos=false"]
    )
    recipe = apply_overrides(MineRecipe(), ["mine.frame_max_side=64", "detector.batch_size=5"])
    assert recipe.workers.prefetch and recipe.workers.pack_videos  # the defaults

    # one video at a time, nothing prefetched, no batch holding two videos
    want = mine_stream(VideoMiner(plain_recipe, str(tmp_path / "plain"), DETECTOR), tasks)
    assert sorted(want) == [t.video_id for t in tasks]
    assert len({w["pixels"] for w in want.values()}) == N_VIDEOS  # every video's pixels differ
    assert all(w["rows"] for w in want.values())

    # 12 frames per video in batches of 5: batches hold the end of one video and the start of the next;
    # the next video is prefetched while the current one is mined, or all are queued at once
    for hand_every in (1, 2, 0):
        miner = VideoMiner(recipe, str(tmp_path / f"packed-{hand_every}"), DETECTOR)
        assert mine_stream(miner, tasks, hand_every) == want, hand_every

    # an object deleted after the listing: its video fails, typed and naming it; the video mined while it
    # was prefetched and the one after it (in the same batches) are unaffected
    storage.remove(storage.join(prefix, "v1.mp4"))
    got = mine_stream(VideoMiner(recipe, str(tmp_path / "deleted"), DETECTOR), tasks[:3])
    assert got["v0.mp4"] == want["v0.mp4"]
    reason = got["v1.mp4"]["failed"]
    assert reason.startswith("ObjectNotFoundError") and storage.join(prefix, "v1.mp4") in reason
    assert got["v2.mp4"] == want["v2.mp4"]


def test_a_listed_object_is_read_with_one_get_and_no_head(videos, s3_bucket, caplog):
    """A Ray worker did not list the prefix itself (its filesystem caches no listing): the listed size
    and ETag must spare it the HEAD request s3fs makes before its first read."""
    from maskahand.video.source import StreamSource

    prefix = storage.join(s3_bucket, "videos")
    upload(videos[:1], prefix)
    (task,) = listed_tasks_of(prefix)
    storage.filesystem(prefix)[0].invalidate_cache()  # as in a worker process
    caplog.set_level(logging.DEBUG, logger="s3fs")
    source = StreamSource(task.source, known=task.fingerprint)
    source.prefetch()
    with source.open() as f:
        data = f.read()
    source.close()
    assert data == videos[0].read_bytes()
    calls = [r.getMessage().split()[1] for r in caplog.records if r.getMessage().startswith("CALL:")]
    assert calls == ["get_object"]


# --- a whole run on Ray -----------------------------------------------------------------------------------


def detections_file(path: Path) -> Path:
    lines = [
        json.dumps({"video": f"v{k}.mp4", "frame": i + 1, "width": 64, "height": 48, "hands": [CONTACT]})
        for k in range(N_VIDEOS)
        for i in range(FRAMES)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def outputs(out: Path) -> tuple[dict[str, tuple[str, str, list[str]]], dict[str, bytes]]:
    """(ledger: video id -> (status, reason, shards), shard file name -> bytes)."""
    ledger = {}
    for line in (out / "ledger.jsonl").read_text().splitlines():
        r = json.loads(line)
        ledger[r["video_id"]] = (r["status"], r["reason"], r["shards"])
    shards = {p.name: p.read_bytes() for p in sorted((out / "shards").glob("*"))}
    return ledger, shards


@pytest.mark.ray
def test_a_run_with_prefetch_and_packed_batches_gives_the_same_outputs_and_a_bad_object_fails_alone(
    ray_session, videos, s3_bucket, tmp_path
):
    from maskahand.mine.ledger import rebuild_manifest
    from maskahand.mine.pipeline import mine, plan
    from maskahand.mine.scheduler import run_scheduler

    prefix = storage.join(s3_bucket, "videos")
    upload(videos, prefix)
    base = [
        "detector.backend=precomputed",
        f"detector.precomputed.path={detections_file(tmp_path / 'detections.jsonl')}",
        "mine.frame_max_side=64",
        "workers.decoders=2",
        "detector.batch_size=5",  # 12 frames per video: most batches hold the end of one and the next's start
    ]
    plain = apply_overrides(MineRecipe(), [*base, "workers.prefetch=false", "workers.pack_videos=false"])
    with_prefetch = apply_overrides(MineRecipe(), base)
    assert with_prefetch.workers.prefetch and with_prefetch.workers.pack_videos  # the defaults
    mine(plain, prefix + "/", tmp_path / "plain", progress=False)
    mine(with_prefetch, prefix + "/", tmp_path / "with", progress=False)
    ledger, shards = outputs(tmp_path / "plain")
    assert sorted(ledger) == [f"v{k}.mp4" for k in range(N_VIDEOS)]
    assert all(status == "ok" and files for status, _, files in ledger.values())
    assert outputs(tmp_path / "with") == (ledger, shards)  # byte for byte, every video exactly once

    # between the listing and the miners' opens: v3 deleted, v4 cut to half its bytes (its listed size
    # and ETag are the old ones)
    out = tmp_path / "faults"
    _, todo, run_ledger = plan(with_prefetch, prefix + "/", out)
    storage.remove(storage.join(prefix, "v3.mp4"))
    storage.put_bytes(storage.join(prefix, "v4.mp4"), videos[4].read_bytes()[: videos[4].stat().st_size // 2])
    run_scheduler(with_prefetch, out, todo, run_ledger, False, None)
    run_ledger.compact()
    rebuild_manifest(out, run_ledger)
    got_ledger, got_shards = outputs(out)
    assert sorted(got_ledger) == sorted(ledger)
    status, reason, files = got_ledger["v3.mp4"]
    assert (status, files) == ("failed", []) and reason.startswith("ObjectNotFoundError")
    assert storage.join(prefix, "v3.mp4") in reason
    assert got_ledger["v4.mp4"][0] == "failed" and "v4.mp4" in got_ledger["v4.mp4"][1]
    for vid in ("v0.mp4", "v1.mp4", "v2.mp4", "v5.mp4"):
        assert got_ledger[vid] == ledger[vid]
        assert {n: got_shards[n] for n in ledger[vid][2]} == {n: shards[n] for n in ledger[vid][2]}
