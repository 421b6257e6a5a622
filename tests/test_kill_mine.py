"""``maskahand mine`` survives a real ``kill -9`` that lands while a video is in flight.

A ``maskahand mine`` process with its own embedded Ray runtime is killed with SIGKILL (every process of its
session: driver, Ray services, decoder and detector actors) at a moment when a video's clips are half
written (a ``.tar.partial`` in its staging folder) and another video is finished; the same command is run
again; every clip shard, shard manifest, per-video part and the clip manifest must then equal, byte for
byte, those of the uninterrupted run of the session fixture ``mined_clip_shards`` (same inputs, same recipe).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from maskahand.core.fsutil import read_jsonl
from maskahand.mine.ledger import video_stem
from tests.proc_util import kill_session, session_titles

pytestmark = [pytest.mark.ray, pytest.mark.slow]

RECIPE = ["detector.backend=mediapipe", "mine.frame_max_side=256"]  # as the mined_clip_shards fixture
OWN_RAY = ["ray.num_cpus=2", f"ray.object_store_memory={150 * 2**20}"]  # runtime only: not in the results


def mid_video(out: Path, frames: dict[str, int]) -> bool:
    """Has a video written clips (a .tar.partial) with about half of its frames still to come?"""
    try:  # a video's staging folder goes when it is published: glob may meet it half-removed
        partials = list(out.glob(".staging/*/*.tar.partial"))
    except FileNotFoundError:
        return False
    for partial in partials:
        stem = partial.parent.name
        with contextlib.suppress(FileNotFoundError):  # published meanwhile
            done = (partial.parent / f"{stem}.frames.jsonl").read_bytes().count(b"\n")
            if done < 0.5 * frames[stem]:  # (the log is buffered: it lags a little)
                return True
    return False


def results(out: Path) -> dict[str, bytes]:
    files = [*sorted((out / "shards").iterdir()), *sorted((out / "parts").iterdir()), out / "manifest.jsonl"]
    return {str(p.relative_to(out)): p.read_bytes() for p in files}


def test_sigkill_while_a_video_is_in_flight_then_rerun_gives_identical_bytes(mined_clip_shards, tmp_path):
    reference = mined_clip_shards
    ledger = list(read_jsonl(reference / "ledger.jsonl"))
    videos = {Path(r["path"]).parent for r in ledger}
    assert len(videos) == 1 and all(r["status"] == "ok" for r in ledger)
    expected = results(reference)

    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "maskahand.cli", "mine", "--videos", str(videos.pop()), "--out", str(out)]
    cmd += ["--no-progress", *RECIPE, *OWN_RAY]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {"OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, start_new_session=True
    )
    deadline = time.time() + 300
    frames = {video_stem(r["video_id"]): r["frames"] for r in ledger}
    while time.time() < deadline and proc.poll() is None:
        if (
            mid_video(out, frames)
            and (out / "ledger.jsonl").is_file()
            and (out / "ledger.jsonl").stat().st_size
        ):
            break  # a video is finished, another one's clips are half written
        time.sleep(0.005)
    assert proc.poll() is None, f"finished before the kill: {proc.stderr.read().decode()[-2000:]}"
    assert len(kill_session(proc.pid)) > 3  # the driver, Ray's services, the actors
    proc.wait()
    proc.stderr.close()
    time.sleep(1.0)
    left = sorted(str(p.relative_to(out)) for p in out.rglob("*"))
    assert any(name.endswith(".tar.partial") for name in left), left
    done_before = {r["video_id"] for r in read_jsonl(out / "ledger.jsonl")}
    assert 0 < len(done_before) < len(ledger), done_before

    again = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    assert results(out) == expected
    lines = [r["video_id"] for r in read_jsonl(out / "ledger.jsonl")]
    assert sorted(lines) == sorted(r["video_id"] for r in ledger)  # finished videos were not mined again
    assert not (out / ".staging").exists() or not any((out / ".staging").iterdir())


def test_a_miner_that_crashes_mid_video_fails_that_video_only_and_a_retry_completes_it(
    mined_clip_shards, tmp_path
):
    """SIGKILL one miner process (a decoder crash on a bad video, on a live node): the run goes on with a fresh
    miner, records that one video failed (not "lost with its node"), exits 0; --retry-failed completes it."""
    reference = mined_clip_shards
    ledger = list(read_jsonl(reference / "ledger.jsonl"))
    expected = results(reference)
    videos = {Path(r["path"]).parent for r in ledger}.pop()
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "maskahand.cli", "mine", "--videos", str(videos), "--out", str(out)]
    cmd += ["--no-progress", *RECIPE, *OWN_RAY]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {"OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True
    )
    frames = {video_stem(r["video_id"]): r["frames"] for r in ledger}
    victim = None
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and victim is None:
        if mid_video(out, frames):
            busy = [
                pid
                for pid, title in session_titles(proc.pid).items()
                if title.startswith("ray::VideoMiner.") and not title.startswith("ray::VideoMiner.__init__")
            ]
            victim = busy[0] if busy else None
        time.sleep(0.005)
    assert victim is not None, "no miner was caught in the middle of a video"
    os.kill(victim, signal.SIGKILL)
    _, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr[-3000:]
    rows = {r["video_id"]: r for r in read_jsonl(out / "ledger.jsonl")}
    failed = [v for v, r in rows.items() if r["status"] == "failed"]
    assert len(failed) == 1 and len(rows) == len(ledger), rows
    assert "ActorDiedError" in rows[failed[0]]["reason"] and "lost with its miner's node" not in stderr
    assert "no verdict from Ray" not in stderr  # a crash is decided at once, not after the timeout
    assert all(r["status"] == "ok" for v, r in rows.items() if v != failed[0])

    plain = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert plain.returncode == 0 and "nothing to do" in plain.stdout, plain.stderr[
        -2000:
    ]  # failed stays failed
    again = subprocess.run([*cmd, "--retry-failed"], capture_output=True, text=True, env=env, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    assert results(out) == expected  # nothing of the crashed attempt is left, nothing is twice
