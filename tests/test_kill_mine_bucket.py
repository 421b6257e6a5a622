"""``maskahand mine --out s3://...`` survives a real ``kill -9`` that lands while a video is in flight.

As tests/test_kill_mine.py, with the output in a bucket of a real S3-compatible server (moto): the miners
stage in node-local temporary folders (here under the test's own TMPDIR, so the test can see a video half
written), uploads happen per finished video, and each finished video's ledger line is its own object. The
command is killed with SIGKILL (driver, Ray services, actors) while one video is done and another is half
written, then run again: every shard, shard manifest, part and the clip manifest in the bucket must equal,
byte for byte, those of the uninterrupted local run of the session fixture ``mined_clip_shards``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from maskahand.core import storage
from maskahand.core.fsutil import read_jsonl
from maskahand.mine.ledger import LEDGER, LEDGER_ENTRIES, MANIFEST, video_stem
from tests.proc_util import kill_session
from tests.test_kill_mine import OWN_RAY, RECIPE
from tests.test_object_storage_outputs import local_files, objects

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def mid_video(node_tmp: Path, frames: dict[str, int]) -> bool:
    """Has a miner written clips (a .tar.partial in its node-local staging) with half its frames to come?"""
    for partial in node_tmp.glob("maskahand-mine-*/*/*.tar.partial"):
        stem = partial.parent.name
        with contextlib.suppress(FileNotFoundError):  # uploaded meanwhile
            done = (partial.parent / f"{stem}.frames.jsonl").read_bytes().count(b"\n")
            if done < 0.5 * frames[stem]:
                return True
    return False


def test_sigkill_mid_video_on_a_bucket_then_rerun_gives_identical_bytes(mined_clip_shards, s3_bucket):
    reference = mined_clip_shards
    ledger = list(read_jsonl(reference / "ledger.jsonl"))
    videos = {Path(r["path"]).parent for r in ledger}.pop()
    out = f"{s3_bucket}/clips"
    # short: Ray puts its sockets under TMPDIR too, and a unix socket path may not exceed 107 bytes
    node_tmp = Path(tempfile.mkdtemp(prefix="mah-kb-", dir="/tmp"))
    try:
        run_kill_and_rerun(reference, ledger, videos, out, node_tmp)
    finally:
        shutil.rmtree(node_tmp, ignore_errors=True)


def run_kill_and_rerun(reference, ledger, videos, out: str, node_tmp: Path) -> None:
    expected = {
        k: v
        for k, v in local_files(reference).items()
        if k.split("/")[0] in ("shards", "parts") or k == MANIFEST
    }
    cmd = [sys.executable, "-m", "maskahand.cli", "mine", "--videos", str(videos), "--out", out]
    cmd += ["--no-progress", *RECIPE, *OWN_RAY]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env |= {"OMP_NUM_THREADS": "1", "TMPDIR": str(node_tmp)}
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, start_new_session=True
    )
    frames = {video_stem(r["video_id"]): r["frames"] for r in ledger}
    entries = storage.join(out, LEDGER_ENTRIES)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if mid_video(node_tmp, frames) and storage.listdir(entries):
            break  # a video is finished (its ledger object is there), another one's clips are half written
        time.sleep(0.005)
    assert proc.poll() is None, f"finished before the kill: {proc.stderr.read().decode()[-2000:]}"
    assert len(kill_session(proc.pid)) > 3
    proc.wait()
    proc.stderr.close()
    time.sleep(1.0)
    done_before = {json.loads(b)["video_id"] for b in objects(entries).values()}
    assert 0 < len(done_before) < len(ledger), done_before
    assert not storage.exists(storage.join(out, MANIFEST))  # the killed run never got to its manifest

    env["TMPDIR"] = str(node_tmp / "fresh")  # a fresh node: nothing staged by the killed run
    Path(env["TMPDIR"]).mkdir()
    again = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    got = objects(out)
    assert {k: got.get(k) for k in expected} == expected
    extra = sorted(k for k in got if k.split("/")[0] in ("shards", "parts") and k not in expected)
    assert extra == []  # nothing of the killed video left behind
    lines = [json.loads(line)["video_id"] for line in got[LEDGER].decode().splitlines()]
    assert sorted(lines) == sorted(r["video_id"] for r in ledger)  # finished videos were not mined again
    assert not [k for k in got if k.startswith(LEDGER_ENTRIES)]
