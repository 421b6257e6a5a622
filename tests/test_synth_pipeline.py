"""Synthesis from clip shards to maskahand shards: determinism, replay, resume, CLI, preview, GPU agreement."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from maskahand.core.config import ShardWriterConfig, SynthConfig, SynthRecipe
from maskahand.core.configbase import ConfigChangedError
from maskahand.shards.reader import clip_dataset, maskahand_dataset
from maskahand.shards.schema import CLIP_SCHEMA, ClipSample
from maskahand.shards.writer import ShardWriter
from maskahand.synth import recipe as rc
from maskahand.synth.pipeline import LEDGER, SUMMARY, SynthError, process_shard, run_synth, synthesize_clips

T, H, W = 4, 60, 80


def clip_sample(key: str, seed: int, hands_at: dict[int, list[list[float]]]) -> ClipSample:
    frames = torch.randint(
        0, 256, (T, 3, H, W), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed)
    )
    detections = [[] for _ in range(T)]
    for pos, boxes in hands_at.items():
        detections[pos] = [{"box": b, "state": "contact", "score": 0.995} for b in boxes]
    meta = {
        "schema": CLIP_SCHEMA,
        "video_id": f"video{seed}.mp4",
        "video_path": f"/videos/video{seed}.mp4",
        "fps": 5.0,
        "frame_indices": [6 * t for t in range(T)],
        "timestamps": [t / 5 for t in range(T)],
        "width": W,
        "height": H,
        "source_width": 2 * W,
        "source_height": 2 * H,
        "detections": detections,
        "interacting": sorted(hands_at),
        "rule": {"contact_score": 0.99, "unknown_rule": "score", "unknown_score": 0.9},
        "detector": {"name": "test", "version": "1"},
    }
    return ClipSample(key=key, frames=frames, meta=meta)


@pytest.fixture(scope="module")
def clip_shards(tmp_path_factory) -> Path:
    """Two clip shards (3 + 2 clips); clip c2 has no interacting hand."""
    out = tmp_path_factory.mktemp("clips")
    hands = [
        {1: [[10.0, 10.0, 30.0, 35.0]]},
        {0: [[0.0, 20.0, 15.0, 45.0], [50.0, 30.0, 75.0, 58.0]], 3: [[40.0, 5.0, 60.0, 25.0]]},
        {},
        {2: [[60.0, 40.0, 80.0, 60.0]]},
        {3: [[30.0, 30.0, 31.0, 31.0]]},
    ]
    with ShardWriter(out, "clips", ShardWriterConfig(max_samples=3), kind="clip") as writer:
        for i, h in enumerate(hands):
            writer.write(clip_sample(f"c{i}", i, h))
    return out


def small_recipe(**synth: object) -> SynthRecipe:
    base = {"variants": 3, "output_size": 48, "blur_kernel": 15, "batch_size": 4, "device": "cpu"}
    base.update(synth)
    return SynthRecipe(synth=SynthConfig(**base))  # type: ignore[arg-type]


def read_samples(path: Path) -> list:
    return list(maskahand_dataset(path, split_by_node=False, split_by_worker=False, on_error="raise"))


MODES = pytest.mark.parametrize("mode", ["random_sides", "centered"])


@MODES
def test_process_shard_is_byte_identical_and_replayable(clip_shards, tmp_path, mode):
    recipe = small_recipe(hand_mask_mode=mode)
    shard = clip_shards / "clips-000000.tar"
    rec_a = process_shard(shard, tmp_path / "a", recipe)
    rec_b = process_shard(shard, tmp_path / "b", recipe)
    assert (tmp_path / "a" / shard.name).read_bytes() == (tmp_path / "b" / shard.name).read_bytes()
    assert rec_a["written"] == rec_b["written"] == 2 and rec_a["skipped"] == ["c2"] and rec_a["targets"] == 6

    clips = {
        c.key: c for c in clip_dataset(shard, split_by_node=False, split_by_worker=False, on_error="raise")
    }
    rendered, _ = synthesize_clips([clips["c0"], clips["c1"]], recipe.synth, shard.name)
    samples = read_samples(tmp_path / "a" / shard.name)
    assert [s.key for s in samples] == ["c0", "c1"]
    for sample, fresh in zip(samples, rendered):
        assert sample.frames.shape == (T, 3, 48, 48) and sample.targets.shape == (3, 3, 48, 48)
        assert sample.meta["clip_key"] == sample.key and len(sample.meta["targets"]) == 3
        assert sample.meta["clip_shard"] == shard.name
        for k, prov in enumerate(sample.meta["targets"]):
            assert prov["hand_mask_mode"] == mode
            target, heatmap = rc.replay(prov, clips[sample.key].frames[prov["frame"]])
            assert torch.equal(target, fresh.targets[k])
            assert torch.equal(sample.targets[k], target)  # stored losslessly: noise and all
            torch.testing.assert_close(heatmap, sample.heatmaps[k], atol=2e-5, rtol=0)  # 16-bit PNG


def test_replay_sample_needs_only_the_sample_and_the_clip_folder(clip_shards, tmp_path):
    from maskahand.synth.provenance import replay_sample

    for name in ("clips-000000.tar", "clips-000001.tar"):
        process_shard(clip_shards / name, tmp_path / "out", small_recipe())
    samples = read_samples(tmp_path / "out")
    assert {s.meta["clip_shard"] for s in samples} == {"clips-000000.tar", "clips-000001.tar"}
    # a mine output folder keeps its shards in shards/: both layouts are found
    mine_like = tmp_path / "mined"
    (mine_like / "shards").mkdir(parents=True)
    for p in clip_shards.glob("*.tar"):
        (mine_like / "shards" / p.name).symlink_to(p)
    for sample in samples:
        targets, heatmaps = replay_sample(sample.meta, mine_like)
        assert torch.equal(targets, sample.targets)
        torch.testing.assert_close(heatmaps, sample.heatmaps, atol=2e-5, rtol=0)
    with pytest.raises(FileNotFoundError, match="clips-000009.tar"):
        replay_sample({**samples[0].meta, "clip_shard": "clips-000009.tar"}, clip_shards)
    with pytest.raises(KeyError, match="no sample 'c9'"):
        replay_sample({**samples[0].meta, "clip_key": "c9"}, clip_shards)


def test_jpeg_targets_remain_readable(clip_shards, tmp_path):
    """shards.target_format=jpeg (and shards written before lossless targets) still read back."""
    recipe = small_recipe()
    recipe.shards.target_format = "jpeg"
    shard = clip_shards / "clips-000000.tar"
    process_shard(shard, tmp_path / "jpeg", recipe)
    process_shard(shard, tmp_path / "png", small_recipe())
    import tarfile

    with tarfile.open(tmp_path / "jpeg" / shard.name) as tar:
        assert any(n.endswith(".t00.jpg") for n in tar.getnames())
    for lossy, exact in zip(read_samples(tmp_path / "jpeg"), read_samples(tmp_path / "png")):
        diff = (lossy.targets.float() - exact.targets.float()).abs()
        assert 0 < diff.mean() < 20


@MODES
def test_batch_size_does_not_change_the_output(clip_shards, tmp_path, mode):
    shard = clip_shards / "clips-000000.tar"
    process_shard(shard, tmp_path / "b1", small_recipe(batch_size=1, hand_mask_mode=mode))
    process_shard(shard, tmp_path / "b64", small_recipe(batch_size=64, hand_mask_mode=mode))
    assert (tmp_path / "b1" / shard.name).read_bytes() == (tmp_path / "b64" / shard.name).read_bytes()
    one, many = read_samples(tmp_path / "b1" / shard.name), read_samples(tmp_path / "b64" / shard.name)
    for a, b in zip(one, many):
        assert a.meta == b.meta and torch.equal(a.targets, b.targets) and torch.equal(a.frames, b.frames)
        torch.testing.assert_close(a.heatmaps, b.heatmaps, atol=2e-5, rtol=0)


def test_corrupt_input_shard_is_named(tmp_path):
    bad = tmp_path / "in" / "broken.tar"
    bad.parent.mkdir()
    bad.write_bytes(b"this is not a tar archive" * 40)
    with pytest.raises(Exception, match="broken.tar"):
        process_shard(bad, tmp_path / "out", small_recipe())
    assert not list((tmp_path / "out").glob("*.tar*"))  # nothing half-written left


def test_run_synth_resumes_without_duplicates(clip_shards, tmp_path, ray_session):
    recipe = small_recipe(variants=2)
    out = tmp_path / "out"
    first = run_synth(clip_shards, out, recipe, progress=False)
    assert first == {
        **first,
        "inputs": 2,
        "processed": 2,
        "clips": 5,
        "written": 4,
        "skipped_no_interaction": 1,
    }
    assert first["targets"] == 8
    original = {p.name: p.read_bytes() for p in out.glob("*.tar")}
    kept_mtime = os.stat(out / "clips-000000.tar").st_mtime_ns

    # A run killed while writing clips-000001: a partial tar, an atomic-write temp file, no manifest.
    (out / "clips-000001.tar.json").unlink()
    (out / "clips-000001.tar").rename(out / "clips-000001.tar.partial")
    (out / ".clips-000001.tar.json.x1y2.tmp").write_text("{")
    second = run_synth(clip_shards, out, recipe, progress=False)
    assert second["resumed"] == 1 and second["processed"] == 1 and second["written"] == 4
    assert os.stat(out / "clips-000000.tar").st_mtime_ns == kept_mtime
    assert {p.name: p.read_bytes() for p in out.glob("*.tar")} == original
    assert not list(out.glob("*.partial")) and not list(out.glob(".*.tmp"))
    ledger = [json.loads(line) for line in (out / LEDGER).read_text().splitlines()]
    assert [r["input"] for r in ledger].count("clips-000001.tar") == 2
    keys = [s.key for s in read_samples(out)]
    assert sorted(keys) == ["c0", "c1", "c3", "c4"]  # no duplicates
    assert json.loads((out / SUMMARY).read_text())["written"] == 4
    third = run_synth(clip_shards, out, small_recipe(variants=2, batch_size=7), progress=False)
    assert third["processed"] == 0 and third["resumed"] == 2
    with pytest.raises(ConfigChangedError, match="synth.variants: 2 -> 3"):
        run_synth(clip_shards, out, small_recipe(variants=3), progress=False)


def test_a_crashed_worker_is_recorded_as_a_failed_shard(clip_shards, tmp_path, ray_session, monkeypatch):
    """A Ray worker that dies (OOM killer, segfault in a decoder) fails its shard, not the whole run."""
    from maskahand.synth import pipeline

    real_task = pipeline._task

    def crashing_task(in_path, out_dir, recipe, threads, env=None):  # nested: Ray ships it by value
        if in_path.endswith("clips-000001.tar"):
            os._exit(1)
        return real_task(in_path, out_dir, recipe, threads, env)

    monkeypatch.setattr(pipeline, "_task", crashing_task)
    out = tmp_path / "out"
    with pytest.raises(SynthError, match="clips-000001.tar"):
        run_synth(clip_shards, out, small_recipe(variants=2), progress=False)
    ledger = [json.loads(line) for line in (out / LEDGER).read_text().splitlines()]
    assert sorted(r["input"] for r in ledger) == ["clips-000000.tar", "clips-000001.tar"]
    assert ["error" in r for r in sorted(ledger, key=lambda r: r["input"])] == [False, True]
    assert json.loads((out / SUMMARY).read_text())["failed"] == ["clips-000001.tar"]
    monkeypatch.setattr(pipeline, "_task", real_task)
    assert run_synth(clip_shards, out, small_recipe(variants=2), progress=False)["processed"] == 1


def test_cli_end_to_end_on_mined_real_clips(mined_clip_shards, ray_session, tmp_path):
    from maskahand.cli import main
    from maskahand.shards.check import check_shards

    # The mine output folder itself is accepted wherever shards are read (its shards are in shards/).
    clips_dir = mined_clip_shards
    mined = check_shards(clips_dir, progress=False)
    assert mined.ok and len(mined.shards) == len(list((mined_clip_shards / "shards").glob("*.tar"))) > 0
    out = tmp_path / "maskahand"
    recipe_file = tmp_path / "recipe.yaml"
    recipe_file.write_text("synth:\n  output_size: 128\n  blur_kernel: 21\n")
    rc_ = main(
        [
            "synth",
            "--clips",
            str(clips_dir),
            "--out",
            str(out),
            "--variants",
            "2",
            "--no-progress",
            "--config",
            str(recipe_file),
            "synth.blur_kernel=43",
        ]
    )
    assert rc_ == 0
    report = check_shards(out, progress=False)
    assert report.ok, report.problems
    clips = list(clip_dataset(clips_dir, split_by_node=False, split_by_worker=False, on_error="raise"))
    samples = read_samples(out)
    with_hands = [c for c in clips if rc.interacting_hands(c.meta)]
    assert len(samples) == len(with_hands) > 0
    resolved = (out / "config.yaml").read_text()
    assert "variants: 2" in resolved and "output_size: 128" in resolved and "blur_kernel: 43" in resolved
    by_key = {c.key: c for c in clips}
    for s in samples:
        assert s.targets.shape == (2, 3, 128, 128) and s.frames.shape[1:] == (3, 128, 128)
        assert s.frames.shape[0] == by_key[s.key].frames.shape[0]
        for k, prov in enumerate(s.meta["targets"]):
            assert prov["frame"] in by_key[s.key].meta["interacting"]
            assert s.heatmaps[k].max() > 0.2  # a hand is in every ground truth

    sheet = tmp_path / "sheet.png"
    assert main(["synth", "preview", str(out), "--out", str(sheet), "--samples", "2"]) == 0
    from PIL import Image

    with Image.open(sheet) as img:
        assert img.width > 600 and img.height > 300


def test_cli_reports_missing_arguments(capsys):
    from maskahand.cli import main

    assert main(["synth", "--clips", "somewhere"]) == 2
    assert "--out DIR are required" in capsys.readouterr().err
    assert main(["synth", "frobnicate", "x"]) == 2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CPU/GPU agreement needs a CUDA device")
@MODES
def test_cpu_and_gpu_render_agree(clip_shards, mode):
    from maskahand.synth.clipio import read_clip_shard

    cfg = SynthConfig(variants=4, output_size=96, blur_kernel=31, hand_mask_mode=mode)
    cpu_clips = list(read_clip_shard(clip_shards / "clips-000000.tar", torch.device("cpu")))
    gpu_clips = list(read_clip_shard(clip_shards / "clips-000000.tar", torch.device("cuda")))
    for a, b in zip(cpu_clips, gpu_clips):
        assert (a.frames.float() - b.frames.cpu().float()).abs().max() <= 2  # libjpeg vs nvJPEG IDCT
    pairs = [(c, rc.sample_params(cfg, c.key, c.meta, v)) for c in cpu_clips[:2] for v in range(4)]
    frames = torch.stack([c.frames[p["frame"]] for c, p in pairs])
    params = [p for _, p in pairs]
    t_cpu, gt_cpu = rc.render_binary(frames, params)
    t_gpu, gt_gpu = rc.render_binary(frames.cuda(), params)
    diff = (t_cpu.float() - t_gpu.cpu().float()).abs()
    assert diff.max() <= 2 and (diff > 0).float().mean() < 0.01
    assert (gt_cpu != gt_gpu.cpu()).float().mean() < 1e-3
    _, h_cpu = rc.render(frames, params)
    _, h_gpu = rc.render(frames.cuda(), params)
    assert (h_cpu - h_gpu.cpu()).abs().max() < 0.02


def test_shard_without_interacting_clips_gives_no_output_and_counts_as_done(tmp_path):
    from maskahand.core.fsutil import append_jsonl
    from maskahand.synth.pipeline import _done_inputs

    src = tmp_path / "in"
    with ShardWriter(src, "empty", kind="clip") as writer:
        writer.write(clip_sample("n0", 0, {}))
        writer.write(clip_sample("n1", 1, {}))
    rec = process_shard(src / "empty-000000.tar", tmp_path / "out", small_recipe())
    assert rec["output"] is None and rec["written"] == 0 and rec["skipped"] == ["n0", "n1"]
    assert not list((tmp_path / "out").glob("*.tar*"))
    append_jsonl(tmp_path / "out" / LEDGER, rec)
    assert "empty-000000.tar" in _done_inputs(tmp_path / "out", ["empty-000000.tar"])
