"""What a fine-tuning epoch holds, as the authors' OPRA dataset: one sample per clip (``__len__`` = the
number of clips), the ground truth set (not added) per point, and the 28 x 28 training mode."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from maskahand.core.config import FinetuneRecipe
from maskahand.core.configbase import apply_overrides
from maskahand.evaluation.benchmark import Entry, load_benchmark
from maskahand.runtime.distributed import DistInfo
from maskahand.trainer.task import TrainContext
from tests.eval_standin import write_clip

pytestmark = pytest.mark.usefixtures("torch_one_thread")

# video frames at 2 fps (the clip rate) -> clips of 32 every 16 plus a shorter remainder (authors' rule):
# 80 frames: starts 0, 16, 32, 48 -> 4; 33 frames: [0, 32) + the last 1 -> 2 (32 would give 1); 10: one
LENGTHS = {"long.mp4": 80, "mid.mp4": 33, "short.mp4": 10}
VIDEO_OF_ENTRY = ["long.mp4", "mid.mp4", "short.mp4", "long.mp4"]  # two entries share the long video
CLIPS_OF_ENTRY = [4, 2, 1, 4]


@pytest.fixture(scope="module")
def tree(shared_data, tmp_path_factory) -> Path:
    from PIL import Image

    root = tmp_path_factory.mktemp("opra_clips")
    for name, n in LENGTHS.items():
        frames = [np.full((32, 32, 3), (7 * i) % 256, dtype=np.uint8) for i in range(n)]
        write_clip(root / "clips" / name, frames, fps=2)
    Image.new("RGB", (64, 64), (120, 80, 40)).save(root / "target.jpg")
    real = json.loads((shared_data / "opra" / "test.json").read_text())[: len(VIDEO_OF_ENTRY)]
    entries = [
        {**e, "image_path": "datasets/opra/target.jpg", "video_path": f"datasets/opra/clips/{video}"}
        for e, video in zip(real, VIDEO_OF_ENTRY)
    ]
    (root / "annotations").mkdir()
    (root / "annotations" / "train.json").write_text(json.dumps(entries))
    return root


def make_task(tree: Path, *overrides: str, rank: int = 0, world: int = 1):
    from maskahand.finetune.task import FinetuneTask

    recipe = apply_overrides(
        FinetuneRecipe(),
        ["model.image_size=64", "train.num_frames=4", "train.batch_size=1", "train.device=cpu", *overrides],
    )
    bench = load_benchmark("opra", None, tree, split="train")
    task = FinetuneTask(recipe, bench, None, "none")
    dist = DistInfo(rank=rank, world_size=world, local_rank=rank, device=torch.device("cpu"))
    task.setup(TrainContext(dist, tree / "run", recipe.optim, recipe.train, None))
    return task


def test_an_epoch_holds_every_clip_of_every_entry_once(tree):
    task = make_task(tree)
    assert len(task) == sum(CLIPS_OF_ENTRY) == 11
    want = sorted(
        f"{task.bench.entries[e].index}#{k}" for e, n in enumerate(CLIPS_OF_ENTRY) for k in range(n)
    )
    keys = [key for batch in task.train_batches(0, 0) for key in batch["key"]]
    assert sorted(keys) == want
    assert [k for b in task.train_batches(1, 0) for k in b["key"]] != keys  # reshuffled per epoch
    # two ranks: disjoint halves of the same shuffle, equal in size (the odd clip left out)
    halves = [
        # global batch 2: one sample per rank and step
        [
            k
            for b in make_task(tree, "train.batch_size=2", rank=r, world=2).train_batches(0, 0)
            for k in b["key"]
        ]
        for r in (0, 1)
    ]
    assert len(halves[0]) == len(halves[1]) == 5 and not set(halves[0]) & set(halves[1])
    assert set(halves[0]) | set(halves[1]) < set(want)


def test_clip_counts_match_the_decoded_clips(tree, shared_data):
    """Counting from packet times (no decode) gives as many clips as decoding them, on the generated
    videos and on real ones (Matroska 30 fps, MP4 20 fps, VP9 with frames the container hides)."""
    from maskahand.core.config import EvalConfig, VideoConfig
    from maskahand.evaluation.clips import load_clips
    from maskahand.finetune.clipindex import file_frame_times, sampled_count

    cfg = EvalConfig(image_size=32)
    paths = [tree / "clips" / n for n in LENGTHS] + sorted((shared_data / "videos").iterdir())
    for path in paths:
        times, rate = file_frame_times(path)
        decoded = len(load_clips(path, cfg, VideoConfig()))
        from maskahand.evaluation.clips import clip_windows

        assert len(clip_windows(sampled_count(times, cfg.clip_fps, rate), 32, 16)) == decoded, path.name


def test_eval_max_clips_caps_the_clips_per_entry(tree):
    assert len(make_task(tree, "eval.max_clips=2")) == 2 + 2 + 1 + 2


def test_ground_truth_points_are_set_not_added():
    from maskahand.finetune.task import training_target

    twice = Entry(0, "i", "v", 32, 32, actions=(0, 0), points=(((8.0, 8.0),), ((8.0, 8.0),)))
    once = Entry(0, "i", "v", 32, 32, actions=(0,), points=(((8.0, 8.0),),))
    assert torch.equal(training_target(twice, 2, 32)[0], training_target(once, 2, 32)[0])


def test_the_28_mode_trains_on_the_hotspots_ground_truth_and_resized_predictions(tree):
    from maskahand.evaluation.metrics import gt_map_28
    from maskahand.finetune.task import resize_heatmap_logits

    task = make_task(tree, "train.heatmap_size=28")
    entry = task.bench.entries[0]
    sample = task.sample(entry, 0)
    a = entry.distinct_actions[0]
    assert sample["heatmaps"].shape == (7, 28, 28)
    want = gt_map_28(entry.points_of(a), entry.height, entry.width).float()
    assert torch.allclose(sample["heatmaps"][a], want)
    assert make_task(tree).sample(entry, 0)["heatmaps"].shape == (7, 64, 64)
    # predictions: softmax over 64x64, bilinear to 28x28, renormalised; returned as log-probabilities
    logits = torch.zeros(1, 1, 64, 64)
    logits[0, 0, :32] = 2.0  # top half 7.4x likelier per pixel
    out = resize_heatmap_logits(logits, 28)
    p = out.exp()
    assert out.shape == (1, 1, 28, 28) and p.sum().item() == pytest.approx(1.0, abs=1e-5)
    assert p[0, 0, 0, 0] / p[0, 0, -1, -1] == pytest.approx(np.exp(2.0), rel=1e-4)
    with pytest.raises(Exception, match="heatmap_size"):
        apply_overrides(FinetuneRecipe(), ["train.heatmap_size=512"])


def test_the_28_mode_is_refused_for_box_ground_truth(tree):
    from maskahand.finetune.task import FinetuneTask

    recipe = apply_overrides(FinetuneRecipe(), ["model.image_size=64", "train.heatmap_size=28"])
    bench = replace(load_benchmark("opra", None, tree, split="train"), gt_rule="boxes", name="assistq")
    with pytest.raises(ValueError, match="box ground truth"):
        FinetuneTask(recipe, bench, None, "none")


def test_a_28_mode_training_step_scores_the_resized_prediction_against_the_28_target(tree):
    import torch.nn.functional as F

    from maskahand.trainer.task import step_generator

    small = ["model.hidden=32", "model.heads=2", "model.max_q_thw=[1,16,16]", "model.max_kv_thw=[8,8,8]"]
    task = make_task(tree, "train.heatmap_size=28", *small)
    torch.manual_seed(0)
    model = task.build_model()
    batch = next(iter(task.train_batches(0, 0)))
    # a step whose random horizontal flip leaves the one sample as it is
    step = next(s for s in range(100) if torch.rand(1, generator=step_generator(0, s, 0, stream=3)) >= 0.5)
    loss, scalars = task.training_step(model, batch, step)
    assert loss.requires_grad and torch.isfinite(loss)
    with torch.no_grad():
        logits = model(batch["frames"], batch["image"], batch["num_frames"]).heatmap_logits
    # written out: softmax over the 64x64 pixels, bilinear to 28x28, renormalised; KL over the target's actions
    q = F.interpolate(logits.flatten(2).softmax(-1).view_as(logits), size=(28, 28), mode="bilinear")
    q = q / q.sum((-2, -1), keepdim=True)
    g = batch["heatmaps"]
    kls = [
        (g[0, a] / g[0, a].sum() * (torch.log(g[0, a] / g[0, a].sum()) - torch.log(q[0, a]))).nansum()
        for a in range(7)
        if g[0, a].sum() > 0
    ]
    assert scalars["kld"].item() == pytest.approx(torch.stack(kls).mean().item(), rel=1e-4)
