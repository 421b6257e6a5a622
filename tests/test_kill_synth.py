"""``maskahand synth`` survives a real ``kill -9`` that lands while a shard is being written.

A ``maskahand synth`` process with its own embedded Ray runtime is killed with SIGKILL (every process of
its session: driver, Ray services and the workers writing shards, as a lost node would be) at a moment when an output shard exists only as ``NAME.tar.partial`` and another is already finished; the same
command is run again; every output tar, every shard manifest and the resolved config must then equal,
byte for byte, those of an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from maskahand.core.config import ShardWriterConfig
from maskahand.shards.check import manifest_matches
from maskahand.shards.schema import CLIP_SCHEMA, ClipSample
from maskahand.shards.writer import ShardWriter
from tests.proc_util import kill_session

pytestmark = [pytest.mark.ray, pytest.mark.slow]

T, H, W = 6, 96, 128
SHARDS, CLIPS_PER_SHARD = 4, 6
RECIPE = """\
synth:
  variants: 2
  output_size: 128
  blur_kernel: 31
  batch_size: 2   # one clip per batch: a shard is written sample by sample
  device: cpu
ray:              # the killed run starts a Ray runtime of its own (the reference joins the session's)
  num_cpus: 2
  object_store_memory: 104857600
"""


def clip(key: str, seed: int) -> ClipSample:
    g = torch.Generator().manual_seed(seed)
    frames = torch.randint(0, 256, (T, 3, H, W), dtype=torch.uint8, generator=g)
    x, y = (torch.rand(2, generator=g) * torch.tensor([W - 40, H - 40])).tolist()
    box = [round(x, 2), round(y, 2), round(x + 36, 2), round(y + 30, 2)]
    detections: list[list[dict]] = [[] for _ in range(T)]
    hand_at = seed % T
    detections[hand_at] = [{"box": box, "state": "contact", "score": 0.995}]
    meta = {
        "schema": CLIP_SCHEMA,
        "video_id": f"video{seed}.mp4",
        "video_path": f"/videos/video{seed}.mp4",
        "fps": 5.0,
        "frame_indices": [6 * t for t in range(T)],
        "timestamps": [t / 5 for t in range(T)],
        "width": W,
        "height": H,
        "source_width": W,
        "source_height": H,
        "detections": detections,
        "interacting": [hand_at],
        "rule": {"contact_score": 0.99, "unknown_rule": "score", "unknown_score": 0.9},
        "detector": {"name": "test", "version": "1"},
    }
    return ClipSample(key=key, frames=frames, meta=meta)


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("kill_synth") / "clips"
    with ShardWriter(out, "clips", ShardWriterConfig(max_samples=CLIPS_PER_SHARD), kind="clip") as writer:
        for i in range(SHARDS * CLIPS_PER_SHARD):
            writer.write(clip(f"k{i:03d}", i))
    return out


def early_in_a_shard(out: Path, expected: dict[str, bytes]) -> bool:
    """Is a shard of ``out`` less than 60 % written?"""
    for path in [*out.glob("*.tar.partial"), *out.glob("*.tar")]:
        with contextlib.suppress(FileNotFoundError):  # renamed meanwhile
            if path.stat().st_size < 0.6 * len(expected[path.name.removesuffix(".partial")]):
                return True
    return False


def outputs(out: Path) -> dict[str, bytes]:
    """Every output shard, every manifest, and the resolved recipe."""
    files = sorted(out.glob("*.tar")) + sorted(out.glob("*.tar.json")) + [out / "config.yaml"]
    return {p.name: p.read_bytes() for p in files}


def test_sigkill_while_a_shard_is_written_then_rerun_gives_identical_bytes(clips, ray_session, tmp_path):
    from maskahand.cli import main

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(RECIPE)
    reference = tmp_path / "reference"
    args = ["synth", "--clips", str(clips), "--no-progress", "--config", str(recipe)]
    assert main([*args, "--out", str(reference)]) == 0
    expected = outputs(reference)
    assert len([n for n in expected if n.endswith(".tar")]) == SHARDS

    out = tmp_path / "out"
    # a Ray runtime of its own (joining the session's would leave its tasks running after the kill)
    cmd = [sys.executable, "-m", "maskahand.cli", *args, "--out", str(out)]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {"OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, start_new_session=True
    )
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        # a shard being written, with samples still to come (so the kill cannot miss it): its .partial
        # (or, from a writer that is not atomic, a torn .tar)
        if early_in_a_shard(out, expected) and list(out.glob("*.tar.json")):
            break  # one shard is finished, another is half written
        time.sleep(0.002)
    assert proc.poll() is None, f"finished before the kill: {proc.stderr.read().decode()[-2000:]}"
    assert len(kill_session(proc.pid)) > 3  # the driver, Ray's services, the workers
    proc.wait()
    proc.stderr.close()
    # nothing of the killed run writes any more: what it left stays as it is (a half-written shard)
    time.sleep(1.0)
    left = {p.name: p.stat().st_size for p in out.iterdir()}
    time.sleep(1.0)
    assert {p.name: p.stat().st_size for p in out.iterdir()} == left
    # the README's promise: an interrupted writer never leaves a .tar a reader would take (a .tar is
    # complete: its manifest matches, or it was killed between the rename and the manifest)
    for tar in out.glob("*.tar"):
        assert manifest_matches(tar) or tar.read_bytes() == expected[tar.name], f"torn {tar.name}: {left}"
    assert any(n.endswith(".tar.partial") for n in left), left
    finished = [n for n in left if n.endswith(".tar.json")]
    assert 0 < len(finished) < SHARDS, left

    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"{len(finished)} shards finished before" in done.stdout
    assert outputs(out) == expected
    assert not list(out.glob("*.partial")) and not list(out.glob(".*.tmp"))
