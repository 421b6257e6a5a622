"""The WebDataset shard contract: schemas, writer, readers, `shards check/show`, contact sheets."""

from __future__ import annotations

import copy
import hashlib
import io
import json
import logging
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import webdataset as wds
from PIL import Image

from benchmarks.shards import read_clip
from maskahand.cli import main as cli_main
from maskahand.core.config import ShardWriterConfig
from maskahand.shards.check import check_shards, manifest_matches
from maskahand.shards.codec import dumps_json, encode_sample
from maskahand.shards.reader import clip_dataset, collate_samples, list_shards, maskahand_dataset
from maskahand.shards.schema import (
    CLIP_SCHEMA,
    MASKAHAND_SCHEMA,
    ClipSample,
    MaskAHandSample,
    SchemaError,
    make_key,
    validate_sample,
)
from maskahand.shards.sheet import STATE_COLORS, draw_hands, heatmap_overlay
from maskahand.shards.writer import ShardWriter, TarShard, manifest_path, member_size

# --------------------------------------------------------------------------------------------------
# Sample builders


def smooth_frames(t: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    """Smooth colour gradients (JPEG-friendly, like real footage) that differ per frame and seed."""
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    out = []
    for i in range(t):
        phase = (seed * 7 + i) * 0.3
        chans = [0.5 + 0.5 * torch.sin(3 * xx + phase), 0.5 + 0.5 * torch.cos(2 * yy + phase), (xx + yy) / 2]
        out.append((torch.stack(chans) * 255).round().to(torch.uint8))
    return torch.stack(out)


def clip_meta(t: int, h: int, w: int, video_id: str = "kitchen/P01_01.mp4") -> dict:
    return {
        "schema": CLIP_SCHEMA,
        "video_id": video_id,
        "video_path": f"/data/{video_id}",
        "fps": 5.0,
        "frame_indices": [6 * i for i in range(t)],
        "timestamps": [0.2 * i for i in range(t)],
        "width": w,
        "height": h,
        "source_width": 2 * w,
        "source_height": 2 * h,
        "detections": [
            [{"box": [2.0, 3.0, w / 2, h / 2], "state": "contact", "score": 0.995}]
            + (
                [{"box": [w / 2, 1.0, w - 1.0, h - 2.0], "state": "no_contact", "score": 0.8}]
                if i % 2
                else []
            )
            for i in range(t)
        ],
        "interacting": [0, t - 1],
        "rule": "contact score >= 0.99",
        "detector": {"name": "mediapipe", "version": "0.10.14"},
    }


def make_clip(
    i: int, t: int = 3, h: int = 24, w: int = 32, video_id: str = "kitchen/P01_01.mp4"
) -> ClipSample:
    return ClipSample(
        make_key(video_id, 16 * i), smooth_frames(t, h, w, seed=i), clip_meta(t, h, w, video_id)
    )


def make_maskahand(i: int, t: int = 3, k: int = 2, s: int = 32) -> MaskAHandSample:
    yy, xx = torch.meshgrid(torch.arange(s), torch.arange(s), indexing="ij")
    heat = torch.stack(
        [torch.exp(-((xx - 8 - 4 * j) ** 2 + (yy - 10) ** 2) / 40.0) for j in range(k)]
    ).float()
    meta = {
        "schema": MASKAHAND_SCHEMA,
        "clip_key": make_key("kitchen/P01_01.mp4", 16 * i),
        "video_id": "kitchen/P01_01.mp4",
        "size": s,
        "targets": [
            {
                "frame": j % t,
                "hand_boxes": [[4.0, 5.0, 14.0, 16.0]],
                "mask_boxes": [[1.5, 2.5, 17.0, 19.0], [10.0, 10.0, 25.0, 26.5]],
                "homography": [[1.0, 0.01, 2.0], [0.0, 0.98, -1.5], [0.0, 1e-4, 1.0]],
                "crop": [0.0, 0.0, 64.0, 64.0],
                "seed": 1000 * i + j,
            }
            for j in range(k)
        ],
    }
    return MaskAHandSample(
        key=make_key("kitchen/P01_01.mp4", 16 * i) + f"_v{k}",
        frames=smooth_frames(t, s, s, seed=i),
        targets=smooth_frames(k, s, s, seed=100 + i),
        heatmaps=heat,
        meta=meta,
    )


def write_clips(out: Path, n: int, cfg: ShardWriterConfig, **kw) -> list[ClipSample]:
    samples = [make_clip(i, **kw) for i in range(n)]
    with ShardWriter(out, "clips", cfg, kind="clip") as w:
        for s in samples:
            w.write(s)
    return samples


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(((a.float() - b.float()) ** 2).mean())
    return 10 * np.log10(255.0**2 / max(mse, 1e-12))


# --------------------------------------------------------------------------------------------------
# Keys and schemas


def test_make_key_is_safe_stable_and_distinct():
    k1 = make_key("P01/P01_01.MP4", 16827)
    assert k1 == make_key("P01/P01_01.MP4", 16827)
    assert "." not in k1 and "/" not in k1
    assert k1.startswith("P01_P01_01_MP4_") and k1.endswith("_0000016827")
    # ids that sanitize to the same text stay distinct through the hash
    assert make_key("a.b", 0) != make_key("a_b", 0)
    long_key = make_key("x" * 300 + ".mp4", 10**9)
    assert len(long_key) <= 80 and "." not in long_key
    validate_sample(ClipSample(long_key, smooth_frames(1, 8, 8), clip_meta(1, 8, 8)))


def _mutations():
    def drop(key):
        return lambda s: s.meta.pop(key)

    def setm(path, value):
        def f(s):
            node = s.meta
            for p in path[:-1]:
                node = node[p]
            node[path[-1]] = value

        return f

    return {
        "missing detections": (drop("detections"), "missing key(s) ['detections']"),
        "bad state": (setm(["detections", 0, 0, "state"], "touching"), "state 'touching'"),
        "inverted box": (setm(["detections", 0, 0, "box"], [10, 3, 2, 8]), "x2 < x1"),
        "nan box": (setm(["detections", 0, 0, "box"], [0, 0, float("nan"), 3]), "4 finite numbers"),
        "score above 1": (setm(["detections", 0, 0, "score"], 1.5), "score must be a number in [0, 1]"),
        "timestamps length": (
            setm(["timestamps"], [0.0]),
            "meta.timestamps must be a list with one entry per frame",
        ),
        "width mismatch": (setm(["width"], 33), "!= frames 24x32"),
        "interacting out of range": (setm(["interacting"], [3]), "meta.interacting"),
        "wrong schema": (setm(["schema"], "maskahand.clip/2"), "expected 'maskahand.clip/1'"),
        "detector without version": (setm(["detector"], {"name": "x"}), "meta.detector is missing"),
    }


@pytest.mark.parametrize("case", list(_mutations()))
def test_clip_schema_rejects_bad_meta_and_the_writer_writes_nothing(case, tmp_path):
    mutate, message = _mutations()[case]
    sample = make_clip(0)
    validate_sample(sample)  # the unmutated sample is valid
    mutate(sample)
    with pytest.raises(SchemaError) as err:
        validate_sample(sample, shard="clips-000000.tar")
    assert message in str(err.value)
    assert sample.key in str(err.value) and "clips-000000.tar" in str(err.value)
    with ShardWriter(tmp_path, "clips", kind="clip") as w, pytest.raises(SchemaError):
        w.write(sample)
    assert list(tmp_path.iterdir()) == []


def test_maskahand_schema_rejects_inconsistent_tensors_and_meta():
    cases = {
        "heatmap above 1": (lambda s: s.heatmaps.__setitem__((0, 0, 0), 1.5), "heatmaps must lie in [0, 1]"),
        "targets vs provenance": (lambda s: s.meta["targets"].pop(), "one provenance per target (K=2)"),
        "chosen frame outside clip": (
            lambda s: s.meta["targets"][0].__setitem__("frame", 3),
            "frame position",
        ),
        "homography 2x3": (
            lambda s: s.meta["targets"][0].__setitem__("homography", [[1, 0, 0], [0, 1, 0]]),
            "3x3",
        ),
        "size mismatch": (lambda s: s.meta.__setitem__("size", 256), "meta.size 256 != tensor size 32"),
        "float frames": (lambda s: setattr(s, "frames", s.frames.float()), "frames must be torch.uint8"),
        "heatmap count": (lambda s: setattr(s, "heatmaps", s.heatmaps[:1]), "heatmaps must be (K,S,S)"),
        "dotted key": (lambda s: setattr(s, "key", "clip.0001"), "no dots"),
    }
    validate_sample(make_maskahand(0))
    for name, (mutate, message) in cases.items():
        sample = make_maskahand(0)
        mutate(sample)
        with pytest.raises(SchemaError) as err:
            validate_sample(sample)
        assert message in str(err.value), name


def test_writer_rejects_the_other_kind(tmp_path):
    with (
        ShardWriter(tmp_path, "clips", kind="clip") as w,
        pytest.raises(SchemaError, match="a clip writer got"),
    ):
        w.write(make_maskahand(0))


# --------------------------------------------------------------------------------------------------
# Round trips


def test_clip_round_trip_on_real_frames(shared_data, tmp_path):
    frames = torch.from_numpy(read_clip(shared_data / "videos" / "hands_pillow.mp4", max_side=160))
    frames = frames.permute(0, 3, 1, 2).contiguous()[:6]
    t, _, h, w = frames.shape
    sample = ClipSample(make_key("hands_pillow.mp4", 0), frames, clip_meta(t, h, w, "hands_pillow.mp4"))
    with ShardWriter(tmp_path, "clips", ShardWriterConfig(jpeg_quality=90)) as writer:
        writer.write(sample)
    (back,) = list(clip_dataset(tmp_path))
    assert isinstance(back, ClipSample)
    assert back.key == sample.key and back.meta == sample.meta
    assert back.frames.dtype == torch.uint8 and back.frames.shape == frames.shape
    assert psnr(back.frames, frames) > 30  # JPEG q90 on real footage downscaled to 160 px (31.5 dB)
    assert (back.frames.float() - frames.float()).abs().mean() < 4.0

    # plain webdataset with its standard decoders reads the same shard
    (plain,) = list(
        wds.WebDataset(str(tmp_path / "clips-000000.tar"), shardshuffle=False).decode("torchrgb8")
    )
    assert plain["__key__"] == sample.key and plain["json"] == sample.meta
    assert torch.equal(plain["005.jpg"], back.frames[5])


def test_maskahand_round_trip_keeps_heatmaps_to_16_bits(tmp_path):
    samples = [make_maskahand(i) for i in range(3)]
    with ShardWriter(tmp_path, "mah", kind="maskahand") as writer:
        for s in samples:
            writer.write(s)
    back = list(maskahand_dataset(tmp_path))
    assert [b.key for b in back] == [s.key for s in samples]
    for b, s in zip(back, samples):
        assert b.meta == s.meta
        assert b.heatmaps.dtype == torch.float32 and b.heatmaps.shape == s.heatmaps.shape
        assert float((b.heatmaps - s.heatmaps).abs().max()) <= 0.5 / 65535 + 1e-7
        assert b.frames.shape == s.frames.shape and psnr(b.frames, s.frames) > 35
        assert b.targets.shape == s.targets.shape and psnr(b.targets, s.targets) > 35
    # plain webdataset decodes the JSON; heatmaps are 16-bit grayscale PNGs any PNG reader opens
    (plain, *_) = list(wds.WebDataset(str(tmp_path / "mah-000000.tar"), shardshuffle=False).decode())
    h0 = np.asarray(Image.open(io.BytesIO(plain["h00.png"]))).astype(np.float64) / 65535
    assert np.abs(h0 - samples[0].heatmaps[0].numpy()).max() <= 0.5 / 65535 + 1e-7
    assert plain["json"]["targets"][1]["seed"] == 1
    report = check_shards(tmp_path / "mah-000000.tar", progress=False)  # one shard file works too
    assert report.ok and report.samples == 3 and report.bytes == (tmp_path / "mah-000000.tar").stat().st_size


def test_reading_clips_as_maskahand_fails_clearly(tmp_path):
    write_clips(tmp_path, 1, ShardWriterConfig())
    with pytest.raises(SchemaError, match="expected a maskahand.maskahand/1 sample"):
        list(maskahand_dataset(tmp_path, on_error="raise"))


def test_same_samples_give_byte_identical_shards(tmp_path):
    def write(out: Path) -> list:
        with ShardWriter(out, "mah", ShardWriterConfig(max_samples=2), kind="maskahand") as w:
            for i in range(3):
                w.write(make_maskahand(i))
        return w.finished

    a = write(tmp_path / "a")
    time.sleep(1.1)  # a different wall-clock second must not change any byte
    b = write(tmp_path / "b")
    assert [s.path.name for s in a] == ["mah-000000.tar", "mah-000001.tar"]
    for sa, sb in zip(a, b):
        assert sa.path.read_bytes() == sb.path.read_bytes()
        assert sa.manifest_path.read_bytes() == sb.manifest_path.read_bytes()
        assert sa.sha256 == hashlib.sha256(sa.path.read_bytes()).hexdigest()
    # rewriting a shard in place (a resumed stage) replaces tar and manifest together
    with ShardWriter(tmp_path / "a", "mah", kind="maskahand") as w:
        w.write(make_maskahand(7))
    assert manifest_matches(tmp_path / "a" / "mah-000000.tar")
    assert json.loads(a[0].manifest_path.read_text())["keys"] == [make_maskahand(7).key]


# --------------------------------------------------------------------------------------------------
# Writer: rolling, names, manifests


def test_writer_rolls_by_count_and_flush_and_takes_names(tmp_path):
    samples = [make_clip(i) for i in range(8)]
    with ShardWriter(tmp_path, "clips", ShardWriterConfig(max_samples=3), start_index=5) as w:
        for s in samples[:4]:
            w.write(s)
        w.flush()  # e.g. a video boundary
        w.flush()  # flushing with nothing open is a no-op
        w.set_next_name("resume-P01_01.tar")
        for s in samples[4:]:
            w.write(s)
    names = [(s.path.name, s.count) for s in w.finished]
    assert names == [
        ("clips-000005.tar", 3),
        ("clips-000006.tar", 1),
        ("resume-P01_01.tar", 3),
        ("clips-000007.tar", 1),
    ]
    assert sorted(p.name for p in tmp_path.glob("*.tar")) == sorted(n for n, _ in names)
    for info in w.finished:
        manifest = json.loads(info.manifest_path.read_text())
        with tarfile.open(info.path) as tar:
            member_keys = list(dict.fromkeys(m.name.split(".", 1)[0] for m in tar.getmembers()))
        assert manifest["keys"] == member_keys and manifest["count"] == len(member_keys)
        assert manifest["sha256"] == hashlib.sha256(info.path.read_bytes()).hexdigest()
        assert manifest["bytes"] == info.path.stat().st_size and manifest["schema"] == CLIP_SCHEMA
    read = [s.key for s in clip_dataset(list_shards(tmp_path), split_by_node=False)]
    assert sorted(read) == sorted(s.key for s in samples)


def test_writer_rolls_by_bytes(tmp_path):
    sample = make_clip(0, t=4, h=64, w=64)
    one = sum(member_size(len(d)) for _, d in encode_sample(sample, 90))
    max_bytes = 10240 * (-(-(3 * one + 1024) // 10240))  # room for 3 samples once padded to 10 KiB records
    with ShardWriter(tmp_path, "clips", ShardWriterConfig(max_samples=1000, max_bytes=max_bytes)) as w:
        for i in range(8):
            w.write(make_clip(i, t=4, h=64, w=64))
    counts = [s.count for s in w.finished]
    assert sum(counts) == 8 and len(counts) >= 3 and max(counts) >= 2
    assert all(s.path.stat().st_size <= max_bytes for s in w.finished)
    # a sample larger than max_bytes still gets written, alone in its shard
    with ShardWriter(tmp_path / "big", "clips", ShardWriterConfig(max_bytes=1)) as w:
        w.write(make_clip(0))
        w.write(make_clip(1))
    assert [s.count for s in w.finished] == [1, 1]


# The writer runs in a fresh interpreter: forking a parent that already runs Ray or torch thread pools
# can deadlock the child.
ENDLESS_WRITER = """
import sys, time
sys.path.insert(0, {tests!r})
from test_shards import make_clip
from maskahand.core.config import ShardWriterConfig
from maskahand.shards.writer import ShardWriter

w = ShardWriter({out!r}, "clips", ShardWriterConfig(max_samples=4), kind="clip")
i = 0
while True:  # 4 samples per shard; after 6, say so and optionally idle with a shard open
    w.write(make_clip(i % 50, t=2, h=16, w=16))
    i += 1
    if i == 6:
        print("written", flush=True)
        if {pause!r}:
            time.sleep(60)
"""


def _write_then_kill(out: Path, pause: bool, delay: float) -> None:
    code = ENDLESS_WRITER.format(tests=str(Path(__file__).parent), out=str(out), pause=pause)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "written", "the writer process did not start writing"
        time.sleep(delay)
    finally:
        proc.kill()
        proc.wait(timeout=30)
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL


@pytest.mark.parametrize("pause", [True, False], ids=["killed-with-a-shard-open", "killed-while-writing"])
def test_killed_writer_leaves_no_readable_partial_shard(tmp_path, pause):
    out = tmp_path / "out"
    _write_then_kill(out, pause, delay=0.05 if pause else 0.4)
    tars = sorted(out.glob("*.tar"))
    if pause:  # 6 samples written: one finished shard of 4, and 2 samples in the open one
        assert [p.name for p in tars] == ["clips-000000.tar"]
        assert [p.name for p in out.glob("*.partial")] == ["clips-000001.tar.partial"]
    assert tars, "at least one shard finished before the kill"
    for tar in tars:  # every .tar a reader sees is complete: 4 samples x (json + 2 frames)
        with tarfile.open(tar) as t:
            assert len(t.getmembers()) == 12
    keys = [s.key for s in clip_dataset(out, on_error="raise")]
    assert len(keys) == 4 * len(tars)
    report = check_shards(out, progress=False)
    if pause:
        assert report.ok and any("clips-000001.tar.partial: unfinished shard" in w for w in report.warnings)


# --------------------------------------------------------------------------------------------------
# shards check


def test_check_passes_good_shards_and_reports_corruption(tmp_path, capsys):
    good = tmp_path / "good"
    write_clips(good, 5, ShardWriterConfig(max_samples=2))
    assert cli_main(["shards", "check", str(good), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "shards: 3  samples: 5" in out and "problems: 0" in out

    def damaged(name: str, damage) -> Path:
        d = tmp_path / name
        write_clips(d, 5, ShardWriterConfig(max_samples=2))
        damage(d / "clips-000001.tar")
        return d

    def flip(p: Path) -> None:
        data = bytearray(p.read_bytes())
        for i in range(1600, 1640):  # inside the first frame's JPEG data
            data[i] ^= 0xFF
        p.write_bytes(bytes(data))

    def truncate(p: Path) -> None:
        p.write_bytes(p.read_bytes()[:2500])

    for name, damage, expected in (
        ("flipped", flip, "sha256 differs"),
        ("truncated", truncate, "corrupt or truncated"),
    ):
        d = damaged(name, damage)
        report = check_shards(d, progress=False)
        assert not report.ok
        assert all(p.startswith("clips-000001.tar") for p in report.problems)
        assert any(expected in p for p in report.problems), report.problems
        assert cli_main(["shards", "check", str(d), "--quiet"]) == 1
        assert "PROBLEM clips-000001.tar" in capsys.readouterr().out
    # parallel checking finds the same problems (of the last damaged directory)
    assert check_shards(d, progress=False, jobs=2).problems == report.problems


def test_check_reports_a_member_that_does_not_decode(tmp_path):
    good, bad = make_clip(0), make_clip(1)
    shard = TarShard(tmp_path / "clips-000000.tar", CLIP_SCHEMA)
    shard.add(good.key, encode_sample(good, 90))
    members = encode_sample(bad, 90)
    members[2] = ("001.jpg", b"\xff\xd8 this is not a JPEG")
    shard.add(bad.key, members)
    shard.finish()  # manifest consistent with the tar: only decoding can find the problem
    report = check_shards(tmp_path, progress=False)
    assert len(report.problems) == 1
    assert bad.key in report.problems[0] and "001.jpg: not a decodable JPEG" in report.problems[0]

    # readers skip (and log) the bad sample by default, or stop on it when asked
    assert [s.key for s in clip_dataset(tmp_path)] == [good.key]
    with pytest.raises(Exception, match="not a decodable JPEG"):
        list(clip_dataset(tmp_path, on_error="raise"))


def test_reader_skips_a_truncated_shard_and_check_flags_unverifiable_ones(tmp_path):
    samples = write_clips(tmp_path, 6, ShardWriterConfig(max_samples=2), t=2, h=16, w=16)
    bad = tmp_path / "clips-000001.tar"
    assert manifest_matches(bad)
    bad.write_bytes(bad.read_bytes()[:1500])  # cut inside the first sample's second member
    assert not manifest_matches(bad)
    keys = [s.key for s in clip_dataset(tmp_path)]
    assert keys == [s.key for s in samples[:2] + samples[4:]]
    manifest_path(tmp_path / "clips-000002.tar").unlink()
    assert not manifest_matches(tmp_path / "clips-000002.tar")
    problems = check_shards(tmp_path, progress=False).problems
    assert any(p.startswith("clips-000002.tar: manifest clips-000002.tar.json is missing") for p in problems)


def test_collate_stacks_maskahand_samples(tmp_path):
    with ShardWriter(tmp_path, "mah", kind="maskahand") as w:
        for i in range(3):
            w.write(make_maskahand(i))
    loader = torch.utils.data.DataLoader(
        maskahand_dataset(tmp_path), batch_size=2, collate_fn=collate_samples
    )
    batches = list(loader)
    assert [b["frames"].shape for b in batches] == [(2, 3, 3, 32, 32), (1, 3, 3, 32, 32)]
    assert batches[0]["targets"].shape == (2, 2, 3, 32, 32) and batches[0]["heatmaps"].shape == (2, 2, 32, 32)
    assert batches[1]["key"] == [make_maskahand(2).key] and batches[1]["meta"][0]["size"] == 32
    assert batches[0]["num_frames"].tolist() == [3, 3]
    mixed = collate_samples([make_clip(0, t=2), make_clip(1, t=5)])
    assert mixed["frames"].shape == (2, 5, 3, 24, 32) and mixed["num_frames"].tolist() == [2, 5]
    assert torch.equal(mixed["frames"][0, :2], make_clip(0, t=2).frames)
    assert not mixed["frames"][0, 2:].any() and torch.equal(mixed["frames"][1], make_clip(1, t=5).frames)
    with pytest.raises(ValueError, match="frames of different sizes"):
        collate_samples([make_clip(0, h=24), make_clip(1, h=16)])


def test_reader_skip_logs_the_bad_sample(tmp_path, caplog):
    shard = TarShard(tmp_path / "clips-000000.tar", CLIP_SCHEMA)
    bad = make_clip(1)
    shard.add(bad.key, [("json", b"{not json"), *encode_sample(bad, 90)[1:]])
    shard.add(make_clip(2).key, encode_sample(make_clip(2), 90))
    bad_state = make_clip(3)
    bad_state.meta["detections"][1][0]["state"] = "grasping"  # written around the writer's validation
    shard.add(bad_state.key, encode_sample(bad_state, 90))
    shard.finish()
    with caplog.at_level(logging.WARNING, logger="maskahand.shards.reader"):
        keys = [s.key for s in clip_dataset(tmp_path)]
    assert keys == [make_clip(2).key]
    messages = [r.getMessage() for r in caplog.records]
    assert any(bad.key in m and "not valid JSON" in m for m in messages)
    assert any(bad_state.key in m and "state 'grasping'" in m for m in messages)
    assert len(list(clip_dataset(tmp_path, validate=False))) == 2


# --------------------------------------------------------------------------------------------------
# Splitting, shuffling, resampling


def test_rank_and_worker_split_covers_every_sample_once(tmp_path):
    # 9 shards split by shard; 3 shards (fewer than 2 ranks x 2 workers) split by sample
    for max_samples, shuffle in ((2, 0), (2, 4), (6, 0), (6, 4)):
        out = tmp_path / f"{max_samples}-{shuffle}"
        samples = write_clips(out, 18, ShardWriterConfig(max_samples=max_samples), t=1, h=8, w=8)
        seen: list[str] = []
        for rank in range(2):
            ds = clip_dataset(out, rank=rank, world_size=2, shuffle=shuffle, seed=3)
            loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2)
            got = [s.key for s in loader]
            assert len(got) >= 4, f"rank {rank} read {len(got)} samples"
            seen += got
        assert sorted(seen) == sorted(s.key for s in samples), f"max_samples={max_samples} shuffle={shuffle}"


RANK_READER = """
import json, sys
from pathlib import Path
import torch.distributed as dist
from maskahand.shards.reader import clip_dataset

rank = int(sys.argv[1])
dist.init_process_group("gloo", store=dist.FileStore({store!r}, 2), rank=rank, world_size=2)
try:
    keys = [s.key for s in clip_dataset({shards!r})]  # rank and world size come from the process group
    Path({out!r}.format(rank)).write_text(json.dumps(keys))
    dist.barrier()
finally:
    dist.destroy_process_group()
"""


def test_split_by_torch_distributed_rank(tmp_path):
    samples = write_clips(tmp_path / "shards", 10, ShardWriterConfig(max_samples=2), t=1, h=8, w=8)
    code = RANK_READER.format(
        store=str(tmp_path / "store"), shards=str(tmp_path / "shards"), out=str(tmp_path / "rank{}.json")
    )
    procs = [subprocess.Popen([sys.executable, "-c", code, str(r)]) for r in range(2)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    per_rank = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert all(per_rank) and not set(per_rank[0]) & set(per_rank[1])
    assert sorted(per_rank[0] + per_rank[1]) == sorted(s.key for s in samples)


def test_shuffle_changes_order_but_not_content(tmp_path):
    samples = write_clips(tmp_path, 12, ShardWriterConfig(max_samples=3), t=1, h=8, w=8)
    in_order = [s.key for s in clip_dataset(tmp_path)]
    assert in_order == [s.key for s in samples]
    shuffled = [s.key for s in clip_dataset(tmp_path, shuffle=8, seed=1)]
    assert sorted(shuffled) == sorted(in_order) and shuffled != in_order
    # the sample buffer is seeded too: (seed, epoch) fixes the whole order, in a DataLoader worker as well
    assert [s.key for s in clip_dataset(tmp_path, shuffle=8, seed=1)] == shuffled
    assert [s.key for s in clip_dataset(tmp_path, shuffle=8, seed=2)] != shuffled
    one_shard = tmp_path / "one"  # one shard: only the sample buffer can change the order between epochs
    write_clips(one_shard, 12, ShardWriterConfig(max_samples=12), t=1, h=8, w=8)
    by_epoch = []
    for epoch in (3, 3, 4):
        ds = clip_dataset(one_shard, shuffle=8, seed=1)
        ds.set_epoch(epoch)
        by_epoch.append([s.key for s in torch.utils.data.DataLoader(ds, batch_size=None, num_workers=1)])
    assert by_epoch[0] == by_epoch[1] != by_epoch[2] and sorted(by_epoch[2]) == sorted(in_order)
    # shard order is a function of (seed, epoch): set_epoch reaches DataLoader workers too
    orders = []
    for epoch in (0, 0, 1):
        ds = clip_dataset(tmp_path, shuffle=1, seed=1)  # buffer 1: only the shard order shuffles
        ds.set_epoch(epoch)
        orders.append([s.key for s in torch.utils.data.DataLoader(ds, batch_size=None, num_workers=1)])
    assert orders[0] == orders[1] and orders[0] != orders[2] and sorted(orders[2]) == sorted(in_order)


def test_resampled_mode_goes_past_one_epoch(tmp_path):
    samples = write_clips(tmp_path, 4, ShardWriterConfig(max_samples=2), t=1, h=8, w=8)
    ds = clip_dataset(tmp_path, resampled=True, rank=0, world_size=2)
    keys = []
    for s in ds:
        keys.append(s.key)
        if len(keys) == 20:
            break
    assert len(keys) == 20 and set(keys) == {s.key for s in samples}


def test_bad_rank_arguments_are_rejected(tmp_path):
    write_clips(tmp_path, 1, ShardWriterConfig())
    with pytest.raises(ValueError, match="0 <= rank < world_size"):
        list(clip_dataset(tmp_path, rank=2, world_size=2))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="no \\*.tar shards"):
        clip_dataset(empty)
    with pytest.raises(FileNotFoundError, match="no such shard"):
        clip_dataset(tmp_path / "missing.tar")


# --------------------------------------------------------------------------------------------------
# Contact sheets


def test_draw_hands_uses_state_colours_and_heatmap_overlay_follows_the_map():
    img = torch.full((3, 40, 60), 128, dtype=torch.uint8)
    drawn = np.asarray(draw_hands(img, [{"box": [5, 15, 25, 35], "state": "contact", "score": 0.99}]))
    assert tuple(drawn[25, 5]) == STATE_COLORS["contact"]  # left edge of the box
    assert tuple(drawn[25, 50]) == (128, 128, 128)  # outside untouched

    heat = torch.zeros(40, 60)
    heat[10:20, 30:40] = 1.0
    over = np.asarray(heatmap_overlay(img, heat, alpha=0.6)).astype(int)
    assert tuple(over[0, 0]) == (128, 128, 128)  # zero heat: the image itself
    hot = over[15, 35]
    assert hot[0] > 128 + 20 or hot[2] > 128 + 20 or hot[1] < 128 - 20  # jet at 1.0 is dark red


def test_show_renders_both_kinds(tmp_path, capsys):
    clips, mah = tmp_path / "clips", tmp_path / "mah"
    write_clips(clips, 3, ShardWriterConfig(), t=4, h=48, w=64)
    with ShardWriter(mah, "mah", kind="maskahand") as w:
        w.write(make_maskahand(0))
    assert cli_main(["shards", "show", str(clips), "--out", str(tmp_path / "c.png"), "-n", "2"]) == 0
    assert cli_main(["shards", "show", str(mah), "--out", str(tmp_path / "m.png")]) == 0
    sheet = np.asarray(Image.open(tmp_path / "c.png").convert("RGB"))
    green = np.all(sheet == np.array(STATE_COLORS["contact"]), axis=-1).sum()
    orange = np.all(sheet == np.array(STATE_COLORS["no_contact"]), axis=-1).sum()
    assert green > 50 and orange > 20  # both hand states of the clips are drawn
    assert (tmp_path / "c.config.yaml").is_file()
    m = Image.open(tmp_path / "m.png")
    # maskahand sheet: a row of 3 frames above a row of 2 targets + 2 overlays, cells of 160 px
    assert m.size[0] >= 4 * 160 and m.size[1] >= 2 * 160
    assert cli_main(["shards", "show", str(tmp_path / "nothing"), "--out", str(tmp_path / "x.png")]) == 2


def test_meta_json_is_byte_stable():
    meta = clip_meta(2, 8, 8)
    shuffled = dict(reversed(list(copy.deepcopy(meta).items())))
    assert dumps_json(meta) == dumps_json(shuffled)
