"""The engine on a toy recipe: schedule, parameter groups in use, non-finite guard, exact resume,
config checks on resume, checkpoint retention, DDP under torchrun (gloo) against one process."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from maskahand.core.config import OptimConfig, TrainConfig
from maskahand.core.configbase import ConfigError
from maskahand.runtime.checkpoint_files import list_checkpoints
from maskahand.trainer import TrainingAborted, fit
from maskahand.trainer.checkpoint import load_checkpoint
from maskahand.trainer.schedule import lr_factor

sys.path.insert(0, str(Path(__file__).parent))
from test_trainer_support import ToyTask  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def train_cfg(**kw) -> TrainConfig:
    base = dict(
        max_iters=6, batch_size=4, ckpt_every=1000, log_every=1, device="cpu", image_every=0, keep_last=50
    )
    base.update(kw)
    return TrainConfig(**base)


def log_records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if line.strip()]


def losses(run: Path) -> dict[int, float]:
    return {r["step"]: r["train/loss"] for r in log_records(run) if "train/loss" in r}


def final_model(run: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(list_checkpoints(run)[-1][1])["model"]


def test_schedule_is_warmup_then_cosine_to_the_floor():
    assert lr_factor(0, 100, warmup_iters=4) == pytest.approx(0.25)
    assert lr_factor(3, 100, warmup_iters=4) == pytest.approx(1.0)
    # half-way through the cosine part: exactly half of the range above the floor
    assert lr_factor(4 + 48, 100, warmup_iters=4, min_factor=0.1) == pytest.approx(0.1 + 0.9 * 0.5)
    assert lr_factor(100, 100, warmup_iters=4, min_factor=0.1) == pytest.approx(0.1)
    assert lr_factor(0, 10) == pytest.approx(1.0)
    assert lr_factor(5, 10) == pytest.approx(0.5)


def test_engine_applies_the_schedule_to_every_group_keeping_the_encoder_factor(tmp_path, torch_one_thread):
    fit(ToyTask(), OptimConfig(lr=1e-2, warmup_iters=2, precision="fp32"), train_cfg(max_iters=6), tmp_path)
    recs = {r["step"]: r for r in log_records(tmp_path)}
    for step in range(6):
        f = (step + 1) / 2 if step < 2 else 0.5 * (1 + math.cos(math.pi * (step - 2) / 4))
        assert recs[step]["lr/head"] == pytest.approx(1e-2 * f)
        assert recs[step]["lr/encoder"] == pytest.approx(1e-3 * f)
        assert recs[step]["lr/head_no_decay"] == pytest.approx(1e-2 * f)  # the LayerNorm's group
    assert recs[0]["train/global_batch"] == 4


def test_a_task_step_schedule_multiplies_the_engine_schedule(tmp_path, torch_one_thread):
    """A recipe's own factor (Hotspots: lr / 10 after epoch 15) on top of a flat engine schedule."""

    class StepDecayTask(ToyTask):
        def lr_factor(self, step: int) -> float:
            return 0.1 if step >= 3 else 1.0

    optim = OptimConfig(lr=1e-2, min_lr_factor=1.0, precision="fp32")
    fit(StepDecayTask(), optim, train_cfg(max_iters=5), tmp_path)
    recs = {r["step"]: r for r in log_records(tmp_path)}
    assert [recs[s]["lr/head"] for s in range(5)] == pytest.approx([1e-2] * 3 + [1e-3] * 2)
    assert [recs[s]["lr/encoder"] for s in range(5)] == pytest.approx([1e-3] * 3 + [1e-4] * 2)


def test_a_non_finite_loss_skips_the_update_and_is_counted(tmp_path, torch_one_thread):
    fit(ToyTask(nan_at={2}), OptimConfig(precision="fp32"), train_cfg(max_iters=4, ckpt_every=1), tmp_path)
    recs = {r["step"]: r for r in log_records(tmp_path)}
    assert recs[1]["train/nonfinite_total"] == 0 and recs[2]["train/nonfinite_total"] == 1
    ckpts = dict(list_checkpoints(tmp_path))
    before, after = load_checkpoint(ckpts[2])["model"], load_checkpoint(ckpts[3])["model"]
    assert all(torch.equal(before[k], after[k]) for k in before)  # step 2 changed nothing
    moved = load_checkpoint(ckpts[4])["model"]
    assert not all(torch.equal(after[k], moved[k]) for k in after)  # step 3 trained again
    assert all(torch.isfinite(v).all() for v in moved.values())


def test_too_many_non_finite_losses_in_a_row_abort_naming_the_step(tmp_path, torch_one_thread):
    train = train_cfg(max_iters=10, ckpt_every=2, max_nonfinite=3)
    with pytest.raises(TrainingAborted, match=r"step 5: 3 non-finite losses in a row.*step_00000004\.pt"):
        fit(ToyTask(nan_at={3, 4, 5}), OptimConfig(precision="fp32"), train, tmp_path)
    steps = [s for s, _ in list_checkpoints(tmp_path)]
    assert steps == [2, 4]
    state = load_checkpoint(list_checkpoints(tmp_path)[-1][1])
    assert all(torch.isfinite(v).all() for v in state["model"].values())


def test_resume_continues_exactly_across_an_epoch_boundary(tmp_path, torch_one_thread):
    optim = OptimConfig(lr=1e-2, warmup_iters=1, precision="fp32", grad_clip=0.5)
    fit(ToyTask(), optim, train_cfg(max_iters=8), tmp_path / "straight")
    first = ToyTask()
    fit(first, optim, train_cfg(max_iters=8, ckpt_every=3), tmp_path / "split", config={"max": 8})
    # pretend the run died after its step-3 checkpoint: drop the later ones and resume
    for step, path in list_checkpoints(tmp_path / "split"):
        if step > 3:
            path.unlink()
    second = ToyTask()
    fit(
        second,
        optim,
        train_cfg(max_iters=8, ckpt_every=3),
        tmp_path / "split",
        resume=True,
        config={"max": 8},
    )
    assert second.skips[0] == (0, 3)  # asked for the rest of epoch 0 (5 batches per epoch)
    assert (1, 0) in second.skips
    a, b = final_model(tmp_path / "straight"), final_model(tmp_path / "split")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert losses(tmp_path / "straight") == losses(tmp_path / "split")


class CountingTask(ToyTask):
    """A task with state of its own (batches it trained on), saved per rank by the engine."""

    def __init__(self) -> None:
        super().__init__()
        self.seen = 0

    def training_step(self, model, batch, step):
        self.seen += 1
        return super().training_step(model, batch, step)

    def state_dict(self) -> dict:
        return {"seen": self.seen}

    def load_state_dict(self, state: dict) -> None:
        self.seen = state["seen"]


def test_task_state_is_saved_per_rank_and_restored_on_the_same_world_size(tmp_path, caplog, torch_one_thread):
    optim = OptimConfig(lr=1e-2, precision="fp32")
    fit(CountingTask(), optim, train_cfg(max_iters=3, ckpt_every=3), tmp_path / "run")
    [(_, ckpt)] = list_checkpoints(tmp_path / "run")
    state = load_checkpoint(ckpt)
    assert state["task"] == [{"seen": 3}]  # one entry per rank
    resumed = CountingTask()
    fit(resumed, optim, train_cfg(max_iters=5, ckpt_every=3), tmp_path / "run", resume=True)
    assert resumed.seen == 5
    # a checkpoint of two processes resumed by one: the task state is not given to the wrong rank
    state["task"] = [{"seen": 100}, {"seen": 200}]
    torch.save(state, tmp_path / "two.pt")
    other = CountingTask()
    with caplog.at_level("WARNING"):
        fit(other, optim, train_cfg(max_iters=5, ckpt_every=3), tmp_path / "run2", resume=tmp_path / "two.pt")
    assert other.seen == 2 and "task state of 2 processes, resuming on 1: not restored" in caplog.text


def test_resume_refuses_a_changed_config_and_a_fresh_start_refuses_a_used_folder(tmp_path, torch_one_thread):
    optim = OptimConfig(precision="fp32")
    fit(
        ToyTask(), optim, train_cfg(max_iters=2), tmp_path, config={"train": {"max_iters": 2, "log_every": 1}}
    )
    with pytest.raises(ConfigError, match="already holds checkpoints"):
        fit(ToyTask(), optim, train_cfg(max_iters=2), tmp_path)
    with pytest.raises(ConfigError, match=r"changed config: train\.max_iters: 2 -> 3"):
        fit(
            ToyTask(),
            optim,
            train_cfg(max_iters=3),
            tmp_path,
            resume=True,
            config={"train": {"max_iters": 3}},
        )
    # runtime-only keys may change
    fit(
        ToyTask(),
        optim,
        train_cfg(max_iters=2),
        tmp_path,
        resume=True,
        config={"train": {"max_iters": 2, "log_every": 5}},
    )


def test_retention_keeps_the_last_n_and_every_mth(tmp_path, torch_one_thread):
    fit(
        ToyTask(),
        OptimConfig(precision="fp32"),
        train_cfg(max_iters=7, ckpt_every=1, keep_last=2, keep_every=3),
        tmp_path,
    )
    assert [s for s, _ in list_checkpoints(tmp_path)] == [3, 6, 7]
    assert not list((tmp_path / "checkpoints").glob("*.tmp"))


class GlobalBatchToyTask(ToyTask):
    """ToyTask whose epoch is a fixed list of 8-sample global batches, handed out in micro-batch pieces: every
    optimiser step sees one whole global batch, whatever the split."""

    def train_batches(self, epoch: int, skip: int):
        n = self.ctx.micro_batch
        g = torch.Generator().manual_seed(2000 + epoch)
        x = torch.randn(self.batches_per_epoch * 8, 6, generator=g)
        y = x.sum(-1).sin()
        for b in range(skip, self.batches_per_epoch * 8 // n):
            rows = slice(b * n, (b + 1) * n)
            yield {"key": [f"e{epoch}i{i}" for i in range(rows.start, rows.stop)], "x": x[rows], "y": y[rows]}


def test_gradient_accumulation_equals_one_big_batch(tmp_path, torch_one_thread):
    """Global batch 8 as 8 x 1, 4 x 2 accumulation, 2 x 4, and 2 x 4 chosen by train.device_batch=3: same
    weights, losses and gradient norms every step (Adam hides a gradient's scale, so the logged norm is what
    catches a missing 1/accum_steps)."""
    optim = OptimConfig(lr=1e-2, precision="fp32")
    runs = {}
    for name, kw in (
        ("a1", {}),
        ("a2", {"accum_steps": 2}),
        ("a4", {"accum_steps": 4}),
        ("cap3", {"device_batch": 3}),
    ):
        run = tmp_path / name
        fit(GlobalBatchToyTask(), optim, train_cfg(max_iters=7, batch_size=8, **kw), run)
        recs = {r["step"]: r for r in log_records(run) if "train/loss" in r}
        runs[name] = (final_model(run), recs)
    ref_model, ref_recs = runs["a1"]
    assert ref_recs.keys() == set(range(7))  # crosses an epoch boundary (5 global batches per epoch)
    for name in ("a2", "a4", "cap3"):
        model, recs = runs[name]
        for k in ref_model:
            torch.testing.assert_close(model[k], ref_model[k], rtol=1e-5, atol=1e-6)
        for step, ref in ref_recs.items():
            assert recs[step]["train/loss"] == pytest.approx(ref["train/loss"], rel=1e-5)
            assert recs[step]["train/grad_norm"] == pytest.approx(ref["train/grad_norm"], rel=1e-5)
            assert recs[step]["train/global_batch"] == 8
    split = {
        k: v
        for k, v in runs["cap3"][1][0].items()
        if k in ("train/micro_batch", "train/processes", "train/accum_steps")
    }
    assert split == {"train/micro_batch": 2, "train/processes": 1, "train/accum_steps": 4}
    # data/videos_per_batch counts the whole step (4 micro-batches: rows 0..7 of 6 videos), not one micro-batch
    assert {r["data/videos_per_batch"] for r in runs["cap3"][1].values()} == {6}
    # not trivially equal: half the global batch per step trains other weights
    fit(GlobalBatchToyTask(), optim, train_cfg(max_iters=7, batch_size=4), tmp_path / "half")
    half = final_model(tmp_path / "half")
    assert not all(torch.allclose(half[k], ref_model[k], atol=1e-6) for k in ref_model)


@pytest.mark.parametrize(
    ("kw", "world", "named"),
    [
        ({"batch_size": 8, "accum_steps": 3}, 1, ["train.batch_size=8", "train.accum_steps=3"]),
        ({"batch_size": 9}, 2, ["train.batch_size=9", "2 processes"]),
        ({"batch_size": 9, "device_batch": 4}, 2, ["train.batch_size=9", "2 processes"]),
        (
            {"batch_size": 8, "accum_steps": 2, "device_batch": 2},
            1,
            ["train.accum_steps=2", "train.device_batch=2"],
        ),
    ],
)
def test_a_global_batch_that_does_not_split_fails_naming_the_keys(kw, world, named):
    from maskahand.trainer.batching import batch_split

    with pytest.raises(ConfigError) as e:
        batch_split(train_cfg(**kw), world)
    for text in named:
        assert text in str(e.value)


def test_device_batch_picks_the_smallest_accumulation_under_the_cap():
    from maskahand.trainer.batching import BatchSplit, batch_split

    assert batch_split(train_cfg(batch_size=32, device_batch=8), 2) == BatchSplit(32, 2, 2, 8)
    assert batch_split(train_cfg(batch_size=32, device_batch=5), 2) == BatchSplit(32, 2, 4, 4)
    assert batch_split(train_cfg(batch_size=32, device_batch=64), 8) == BatchSplit(32, 8, 1, 4)
    assert batch_split(train_cfg(batch_size=16, accum_steps=2), 8) == BatchSplit(16, 8, 2, 1)


def test_fit_refuses_a_split_that_does_not_divide_before_writing_anything(tmp_path, torch_one_thread):
    with pytest.raises(ConfigError, match="train.accum_steps=3"):
        fit(
            ToyTask(), OptimConfig(precision="fp32"), train_cfg(batch_size=8, accum_steps=3), tmp_path / "run"
        )
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_two_gloo_processes_under_torchrun_equal_one_process_with_the_same_global_batch(
    tmp_path, torch_one_thread
):
    """The same recipe (global batch 8, train.device_batch=2) on 1 process (2 x 4 accumulation) and on 2 gloo
    processes (2 x 2 x 2 accumulation): the same global batches reach the same weights."""
    optim = OptimConfig(lr=1e-2, precision="fp32")
    fit(ToyTask(), optim, train_cfg(max_iters=7, batch_size=8, device_batch=2), tmp_path / "one")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO / "tests"))
    cmd = [
        str(Path(sys.executable).parent / "torchrun"),
        "--standalone",
        "--nproc-per-node",
        "2",
        str(REPO / "tests" / "test_trainer_support.py"),
        str(tmp_path / "two"),
        "7",
        "8",
        "optim.lr=0.01",
        "train.keep_last=50",
        "train.device_batch=2",
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = final_model(tmp_path / "one"), final_model(tmp_path / "two")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)
    la, lb = losses(tmp_path / "one"), losses(tmp_path / "two")
    assert la.keys() == lb.keys()
    for step in la:
        assert la[step] == pytest.approx(lb[step], rel=1e-5)

    def splits(run: Path) -> set[tuple]:
        keys = ("train/global_batch", "train/micro_batch", "train/processes", "train/accum_steps")
        return {tuple(r[k] for k in keys) for r in log_records(run) if "train/loss" in r}

    assert splits(tmp_path / "one") == {(8, 2, 1, 4)}
    assert splits(tmp_path / "two") == {(8, 2, 2, 2)}
    # rows 0..7 of each global batch come from 6 videos; one rank's rows (0, 1, 4, 5 or 2, 3, 6, 7) from 4
    for run in ("one", "two"):
        assert {r["data/videos_per_batch"] for r in log_records(tmp_path / run) if "train/loss" in r} == {6}
    # and it is not trivially equal: a different global batch gives other weights
    fit(ToyTask(), optim, train_cfg(max_iters=7, batch_size=4), tmp_path / "half")
    c = final_model(tmp_path / "half")
    assert not all(torch.allclose(a[k], c[k], atol=1e-6) for k in a)
