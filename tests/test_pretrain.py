"""MaskAHand pretraining: the authors' parameter groups, target drawing, fresh targets from clips,
mixed clip lengths, activation checkpointing, and exact resume after a real SIGKILL of the CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from maskahand.afformer import build_model, load_reference_checkpoint
from maskahand.afformer.param_groups import afformer_param_groups
from maskahand.core.config import PretrainRecipe
from maskahand.core.configbase import load_config
from maskahand.pretrain.task import EXPORT_NAME, PretrainTask, draw_variants
from maskahand.runtime.checkpoint_files import list_checkpoints
from maskahand.runtime.distributed import DistInfo
from maskahand.trainer import TrainContext
from maskahand.trainer.checkpoint import load_checkpoint

sys.path.insert(0, str(Path(__file__).parent))
from test_pretrain_support import SIZE, TINY, write_clip_shards, write_maskahand_shards  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def tiny(*extra: str) -> PretrainRecipe:
    return load_config(PretrainRecipe, None, [*TINY, *extra])


def setup_task(task: PretrainTask, out: Path) -> PretrainTask:
    r = task.recipe
    info = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
    task.setup(TrainContext(dist=info, out_dir=out, optim=r.optim, train=r.train, autocast_dtype=None))
    return task


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    return write_maskahand_shards(tmp_path_factory.mktemp("maskahand"), 8, per_shard=4)


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    return write_clip_shards(tmp_path_factory.mktemp("clips"), 6, per_shard=3)


def test_parameter_groups_follow_the_authors_detectron2_rules(torch_one_thread):
    recipe = tiny()
    model = build_model(recipe.model)
    groups = {g["name"]: g for g in afformer_param_groups(model, recipe.optim)}
    where = {n: name for name, g in groups.items() for n in g["param_names"]}
    # every trainable parameter exactly once
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert sorted(where) == sorted(trainable)
    assert sum(len(g["params"]) for g in groups.values()) == len(trainable)
    lr, wd = recipe.optim.lr, recipe.optim.weight_decay
    assert groups["encoder"]["lr"] == pytest.approx(lr * 0.1) and groups["encoder"]["weight_decay"] == wd
    assert groups["head"]["lr"] == pytest.approx(lr) and groups["head"]["weight_decay"] == wd
    assert groups["head_no_decay"]["weight_decay"] == 0.0
    # torch normalisation modules (the decoder block's LayerNorms): no decay
    for n in ("norm_self", "norm_cross_q", "norm_cross_kv", "norm_mlp"):
        assert where[f"decoder.block.{n}.weight"] == where[f"decoder.block.{n}.bias"] == "head_no_decay"
    # detectron2 decays everything else: biases, embeddings, rel-pos tables, channel LayerNorms as plain modules
    for n in (
        "decoder.block.self_attn.qkv.bias",
        "decoder.level_embeds.0",
        "decoder.block.cross_attn.rel_pos_t",
        "decoder.temporal_pyramid.norm.weight",
        "predictor.heatmap.norm.bias",
    ):
        assert where[n] == "head", n
    assert (
        where["encoder.body.layer1.0.conv1.weight"]
        == where["encoder.fpn.inner_blocks.0.0.weight"]
        == "encoder"
    )
    assert "encoder_no_decay" not in groups  # frozen batch norm holds buffers, not parameters
    # frozen stages are left out
    frozen = build_model(tiny("model.trainable_backbone_layers=3").model)
    names = {n for g in afformer_param_groups(frozen, recipe.optim) for n in g["param_names"]}
    assert "encoder.body.layer2.0.conv1.weight" in names and "encoder.body.layer1.0.conv1.weight" not in names


def test_target_drawing_depends_on_seed_step_and_key_only():
    keys = [f"clip{i}" for i in range(64)]
    a = draw_variants(0, 7, keys, 4)
    assert a == draw_variants(0, 7, keys, 4)
    assert draw_variants(0, 7, keys[10:20], 4) == a[10:20]  # not on the batch composition
    assert a != draw_variants(0, 8, keys, 4) and a != draw_variants(1, 7, keys, 4)
    assert set(a) == {0, 1, 2, 3}
    steps = [draw_variants(0, s, ["one"], 4)[0] for s in range(200)]
    counts = torch.bincount(torch.tensor(steps), minlength=4)
    assert counts.min() > 25  # every target gets used over a run


def test_batches_mix_clip_lengths_and_steps_pick_the_drawn_target(shards, tmp_path, torch_one_thread):
    task = setup_task(PretrainTask(tiny(), shards=[str(shards)]), tmp_path)
    batches = list(task.train_batches(0, 0))
    assert len(batches) == 4  # 8 clips, batch 2
    lengths = {int(n) for b in batches for n in b["num_frames"]}
    assert lengths == {3, 4}
    mixed = next(b for b in batches if len(set(b["num_frames"].tolist())) == 2)
    short = int(mixed["num_frames"].argmin())
    assert mixed["frames"].shape[1] == 4 and not mixed["frames"][short, 3].any()  # zero padding
    targets, heatmaps = task.targets_for_step(mixed, 5)
    pick = draw_variants(0, 5, mixed["key"], 2)
    for i, k in enumerate(pick):
        assert torch.equal(targets[i], mixed["targets"][i, k])
        expected = mixed["heatmaps"][i, k] / mixed["heatmaps"][i, k].sum()
        torch.testing.assert_close(heatmaps[i, 0], expected)
    assert heatmaps.flatten(1).sum(1).tolist() == pytest.approx([1.0, 1.0])
    # a resumed epoch starts exactly where it stopped
    assert [b["key"] for b in task.train_batches(0, 3)] == [batches[3]["key"]]
    # the shuffle is seeded: the same epoch again is the same order, the next epoch another one
    assert [b["key"] for b in task.train_batches(0, 0)] == [b["key"] for b in batches]
    assert [b["key"] for b in task.train_batches(1, 0)] != [b["key"] for b in batches]


def test_clips_mode_makes_fresh_targets_each_step_and_the_same_for_the_same_seed(
    clips, tmp_path, torch_one_thread
):
    task = setup_task(PretrainTask(tiny("synth.blur_kernel=15"), clips=[str(clips)]), tmp_path)
    batch = next(iter(task.train_batches(0, 0)))
    assert batch["frames"].shape[-2:] == (SIZE, SIZE) and batch["frames"].dtype == torch.uint8
    t1, h1 = task.targets_for_step(batch, 1)
    t1b, h1b = task.targets_for_step(batch, 1)
    t2, _ = task.targets_for_step(batch, 2)
    assert t1.shape == (2, 3, SIZE, SIZE) and h1.shape == (2, 1, SIZE, SIZE)
    assert torch.equal(t1, t1b) and torch.equal(h1, h1b)
    assert not torch.equal(t1, t2)
    assert h1.flatten(1).sum(1).tolist() == pytest.approx([1.0, 1.0])
    other = setup_task(
        PretrainTask(tiny("synth.blur_kernel=15", "synth.seed=5"), clips=[str(clips)]), tmp_path
    )
    assert not torch.equal(other.targets_for_step(batch, 1)[0], t1)


def test_activation_checkpointing_gives_the_same_gradients(shards, tmp_path, torch_one_thread):
    from maskahand.afformer.actckpt import enable_activation_checkpointing

    task = setup_task(PretrainTask(tiny(), shards=[str(shards)]), tmp_path)
    batch = next(iter(task.train_batches(0, 0)))
    grads = []
    for ckpt in (False, True):
        torch.manual_seed(0)
        model = task.build_model()
        if ckpt:
            assert enable_activation_checkpointing(model) == 17  # 16 bottlenecks + the decoder block
        loss, _ = task.training_step(model, batch, 0)
        loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for n in grads[0]:
        torch.testing.assert_close(grads[0][n], grads[1][n], rtol=1e-5, atol=1e-7)


def _cli(shards: Path, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "maskahand.cli", "pretrain", "--shards", str(shards), "--out", str(out),
        *TINY, "model.trainable_backbone_layers=0", "train.max_iters=4", "train.keep_last=10", *extra,
    ]  # fmt: skip


def _losses(run: Path) -> dict[int, float]:
    recs = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines() if x.strip()]
    return {r["step"]: r["train/loss"] for r in recs if "train/loss" in r}


@pytest.mark.slow
def test_sigkill_and_resume_equal_a_straight_run_bit_for_bit(shards, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    straight = subprocess.run(
        _cli(shards, tmp_path / "a", "train.ckpt_every=4"),
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert straight.returncode == 0, straight.stderr[-3000:]
    # the same run, killed (SIGKILL: no cleanup at all) once its step-2 checkpoint exists
    run = tmp_path / "b"
    proc = subprocess.Popen(
        _cli(shards, run, "train.ckpt_every=2"), env=env, stderr=subprocess.PIPE, text=True
    )
    deadline = time.time() + 240
    while not (run / "checkpoints" / "step_00000002.pt").exists():
        assert proc.poll() is None and time.time() < deadline, "run ended before its first checkpoint"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert [s for s, _ in list_checkpoints(run)] == [2]
    resumed = subprocess.run(
        _cli(shards, run, "train.ckpt_every=2", "--resume"),
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stderr
    a = load_checkpoint(tmp_path / "a" / "checkpoints" / "step_00000004.pt")
    b = load_checkpoint(run / "checkpoints" / "step_00000004.pt")
    assert a["model"].keys() == b["model"].keys()
    differ = [k for k in a["model"] if not torch.equal(a["model"][k], b["model"][k])]
    assert not differ, (differ[:5], a["data"], b["data"], _losses(tmp_path / "a"), _losses(run))
    assert a["data"] == b["data"]
    assert _losses(tmp_path / "a") == _losses(run) and sorted(_losses(run)) == [0, 1, 2, 3]
    # the export in the authors' layout loads into a fresh model and holds the final weights
    exported = torch.load(run / EXPORT_NAME, weights_only=True)
    assert all(k.startswith("network.") for k in exported["state_dict"])
    fresh = build_model(tiny().model)
    load_reference_checkpoint(fresh, run / EXPORT_NAME)
    state = fresh.state_dict()
    assert all(torch.equal(state[k], b["model"][k]) for k in b["model"])


def test_resume_mid_epoch_is_exact_when_a_worker_ran_dry_and_samples_were_left_out(
    tmp_path, torch_one_thread
):
    """Two DataLoader workers with uneven shards (worker 1 runs dry after one batch) and a prepare step that
    leaves a sample out: resuming after any number of consumed batches gives exactly the rest of the epoch.
    The batch-count estimate (no record) gets it wrong here, which is why positions are recorded."""
    from maskahand.pretrain.data import EpochBatches, PositionRecord, epoch_loader
    from maskahand.shards import clip_dataset

    a = sorted(write_clip_shards(tmp_path / "a", 8, per_shard=4, seed=0).glob("*.tar"))
    b = sorted(write_clip_shards(tmp_path / "b", 2, per_shard=2, seed=1).glob("*.tar"))
    urls = [str(a[0]), str(b[0]), str(a[1])]  # worker 0 reads a0 and a1 (8 clips), worker 1 reads b0 (2)

    def make_dataset(rank, world_size, seed):
        return clip_dataset(urls, shuffle=0, rank=rank, world_size=world_size, seed=seed)

    def epoch(raw_skips=None, skip=0, first_worker=0):
        ds = EpochBatches(
            make_dataset, 3, skip, 2, 3, 7,
            lambda s: None if s.key == "clip00_002" else s,  # e.g. a clip without an interacting hand
            lambda samples: {"key": [s.key for s in samples]},
            0, 1, raw_skips=raw_skips,
        )  # fmt: skip
        return list(epoch_loader(ds, workers=2, pin_memory=False, first_worker=first_worker))

    full = epoch()
    keys = [tuple(x["key"]) for x in full]
    # samples in turn until worker 1 ran dry; a batch mixes the workers; the 9th sample (a partial batch) is dropped
    assert [[p.worker for p in x["positions"]] for x in full] == [[0, 1], [0, 1], [0, 0], [0, 0]]
    assert len({k for ks in keys for k in ks}) == 8 and "clip00_002" not in {k for ks in keys for k in ks}
    estimate_wrong = False
    for cut in range(1, len(full)):
        record = PositionRecord()
        for x in full[:cut]:
            record.note(x["positions"])
        saved = PositionRecord()
        saved.load_state_dict(record.state_dict())
        raw_skips, first = saved.resume(3, cut, 2, 2)
        rest = epoch(raw_skips, cut, first)
        assert [tuple(x["key"]) for x in rest] == keys[cut:], f"resumed after {cut} batches"
        estimate = [tuple(x["key"]) for x in epoch(None, cut, (cut * 2) % 2)]  # 2 samples a batch, in turn
        estimate_wrong = estimate_wrong or estimate != keys[cut:]
    assert estimate_wrong
    # a record of another epoch, batch count or worker count is not used
    assert saved.resume(3, cut, 2, 2)[0] is not None
    assert saved.resume(4, cut, 2, 2)[0] is None and saved.resume(3, cut + 1, 2, 2)[0] is None
    assert saved.resume(3, cut, 3, 2)[0] is None and saved.resume(3, 0, 2, 2) == (None, 0)
    assert PositionRecord().resume(3, 5, 2, 3) == (
        None,
        1,
    )  # the estimate: 5 x 3 samples in turn: worker 1 next


@pytest.mark.slow
def test_resume_with_two_loader_workers_mid_turn_equals_a_straight_run(shards, tmp_path):
    """The real CLI with two DataLoader workers, each with samples left; after step 1 (3 samples: workers 0, 1,
    0) worker 1's turn is next."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    args = ("train.workers=2", "train.ckpt_every=1", "train.batch_size=3")  # odd: a step ends mid-turn
    for run in ("straight", "split"):
        done = subprocess.run(_cli(shards, tmp_path / run, *args), env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-3000:]
    for step, path in list_checkpoints(tmp_path / "split"):
        if step > 1:
            path.unlink()
    assert load_checkpoint(tmp_path / "split" / "checkpoints" / "step_00000001.pt")["task"][0]["data_position"][
        "last"
    ] == 0  # fmt: skip
    resumed = subprocess.run(
        _cli(shards, tmp_path / "split", *args, "--resume"), env=env, capture_output=True, text=True
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a = load_checkpoint(tmp_path / "straight" / "checkpoints" / "step_00000004.pt")
    b = load_checkpoint(tmp_path / "split" / "checkpoints" / "step_00000004.pt")
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert _losses(tmp_path / "straight") == _losses(tmp_path / "split")
