"""Interaction Hotspots on a stand-in OPRA: real shared videos as demonstrations, verbs as labels, their sample
images as inactive images. Training on the shared trainer lowers the losses; eval and predict write hotspots
for every (image, verb) pair."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from maskahand.cli import main as cli_main
from maskahand.core.config import HotspotsRecipe
from maskahand.core.configbase import apply_overrides
from maskahand.hotspots.data import HotspotsSamples, collate, epoch_order, load_training_set, perturbed_box

pytestmark = [pytest.mark.usefixtures("torch_one_thread"), pytest.mark.slow]

# (video, inactive image, OPRA action 1-based): hold, rotate, push, pick up
PAIRS = [
    ("ego4d_stirring.mp4", "684.jpg", 1),
    ("hands_pillow.mp4", "2890.jpg", 3),
    ("hands_teddy.mp4", "673.jpg", 4),
    ("flipping_a_pancake.mkv", "766.jpg", 6),
]


@pytest.fixture(scope="module")
def standin(shared_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("opra_standin")
    (root / "annotations").mkdir()
    entries = [
        {
            "image_path": str(shared_data / "images" / "opra_inactive" / img),
            "video_path": str(shared_data / "videos" / vid),
            "width": 256,
            "height": 256,
            "actions": [a],
            "heatmaps": [[[64.0 + 30 * i, 128.0], [70.0 + 30 * i, 140.0]]],
        }
        for i, (vid, img, a) in enumerate(PAIRS)
    ]
    for split in ("train", "test"):
        (root / "annotations" / f"{split}.json").write_text(json.dumps(entries))
    from torchvision.models import resnet50

    torch.manual_seed(0)
    torch.save(resnet50(weights=None).state_dict(), root / "resnet50.pth")
    return root


SMALL = [
    "data.resize=40",
    "data.crop=32",
    "data.fps=2",
    "model.image_size=32",
    "model.max_len=3",
    "train.batch_size=4",
    "train.workers=0",
    "train.log_every=1",
    "train.image_every=0",
    "data.balance=false",
]


def test_training_set_and_sampling(standin):
    recipe = apply_overrides(HotspotsRecipe(), SMALL)
    tset = load_training_set(recipe.data, standin)
    assert [it.verb for it in tset.items] == [a - 1 for _, _, a in PAIRS]
    assert len(tset.verbs) == 7
    # their class-balancing weights: N / count(verb), capped
    tset.items.append(tset.items[0])
    assert tset.sampling_weights(100.0).tolist() == [2.5, 5.0, 5.0, 5.0, 2.5]
    assert tset.sampling_weights(3.0).tolist() == [2.5, 3.0, 3.0, 3.0, 2.5]
    tset.items.pop()
    ds = HotspotsSamples(tset, recipe.data, max_len=3, seed=0)
    batch = collate([ds[i] for i in range(2)])
    assert batch["frames"].shape == (2, 3, 3, 32, 32) and batch["frames"].dtype == torch.uint8
    assert batch["inactive"].shape == (2, 3, 32, 32)
    assert batch["lengths"].tolist() == [3, 3]
    again = collate([ds[i] for i in range(2)])
    assert torch.equal(batch["frames"], again["frames"])  # seeded by (seed, epoch, item)
    assert epoch_order(tset, recipe.data, 0, 1) == epoch_order(tset, recipe.data, 0, 1)


def test_epic_box_perturbation_grows_and_shifts_the_box():
    import numpy as np

    rng = np.random.default_rng(0)
    sizes, shifts = [], []
    for _ in range(200):  # a box away from the borders: their growth is 2 * (int(side * U(0.5, 1.5)) // 2)
        x0, y0, x1, y1 = perturbed_box([150, 80, 250, 160], 456, 256, rng)
        w, h = x1 - x0, y1 - y0
        assert 150 <= w <= 250 and 120 <= h <= 200
        assert abs((x0 + x1) / 2 - 200) <= 0.2 * w + 1 and abs((y0 + y1) / 2 - 120) <= 0.2 * h + 1
        sizes.append(w)
        shifts.append((x0 + x1) / 2 - 200)
    assert max(sizes) - min(sizes) > 80 and max(shifts) > 20 and min(shifts) < -20  # really random
    # at the border the growth is clipped per side, as theirs
    x0, y0, x1, y1 = perturbed_box([0, 0, 100, 100], 100, 100, np.random.default_rng(1))
    assert x1 - x0 <= 99 and y1 - y0 <= 99


def test_short_training_lowers_losses_then_eval_and_predict(standin, tmp_path):
    from maskahand.hotspots.model import build_model
    from maskahand.hotspots.task import HotspotsTask
    from maskahand.trainer import fit

    recipe = apply_overrides(
        HotspotsRecipe(),
        # hidden 256: the LSTM is the one part whose size is free; the rest is ResNet-50's d = 2048
        SMALL
        + [
            f"model.backbone_weights={standin / 'resnet50.pth'}",
            "train.max_iters=4",
            "model.hidden=256",
            "optim.lr=0.0003",
        ],  # fmt: skip
    )
    tset = load_training_set(recipe.data, standin)
    torch.manual_seed(0)
    model = build_model(recipe.model)
    fixed = collate([HotspotsSamples(tset, recipe.data, 3, seed=0, train=False)[i] for i in range(4)])

    def losses(m: nn.Module) -> dict[str, float]:
        m.train()  # anticipation terms exist in training mode only
        with torch.no_grad():
            out = m(fixed["frames"], fixed["lengths"], fixed["verbs"], inactive=fixed["inactive"])
        return {k: float(v.mean()) for k, v in out.terms.items()}

    before = losses(model)
    start = {k: v.detach().clone() for k, v in model.named_parameters() if v.requires_grad}
    run = tmp_path / "run"
    final = fit(HotspotsTask(recipe, tset, model=model), recipe.optim, recipe.train, run, config=recipe)
    after = losses(model)
    assert after["cls"] < before["cls"] and after["ant"] < before["ant"], (before, after)
    moved = {
        k.split(".")[0]
        for k, v in model.named_parameters()
        if v.requires_grad and not torch.equal(v, start[k])
    }
    assert moved == {"lstm", "classifier", "anticipation", "h0", "c0"}  # every trainable part learns
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert any("train/cls" in r for r in log)
    assert (run / "hotspots_model.pth").is_file()

    out = tmp_path / "eval"
    rc = cli_main(  # the run's export, in their format
        ["eval", "--dataset", "opra", "--data", str(standin), "--checkpoint", str(run / "hotspots_model.pth"),
         "--model", "hotspots",
         "--out", str(out), "eval.image_size=32", "eval.max_clips=1", "eval.device=cpu"]
    )  # fmt: skip
    assert rc == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["protocols"]["28"]["n"] == len(PAIRS)  # every (image, verb) pair scored
    assert metrics["protocols"]["256"]["n"] == len(PAIRS)

    pred = tmp_path / "pred"
    images = json.loads((standin / "annotations" / "test.json").read_text())
    rc = cli_main(  # the trainer's checkpoint
        ["hotspots", "predict", *[e["image_path"] for e in images], "--checkpoint", str(final), "--out", str(pred),
         "--device", "cpu"]
    )  # fmt: skip
    assert rc == 0
    saved = torch.load(pred / "hotspots.pt", weights_only=True)
    assert saved["maps"].shape == (len(PAIRS), 7, 4, 4) and (saved["maps"] >= 0).all()
    assert len(list(pred.glob("*.png"))) == len(PAIRS) * 7


def test_train_refuses_activation_checkpointing_naming_the_key(standin, tmp_path, capsys):
    """Hotspots' task has no activation checkpointing: the shared key is refused (exit 2), not ignored."""
    out = tmp_path / "run"
    rc = cli_main(
        ["hotspots", "train", "--dataset", "opra", "--data", str(standin), "--out", str(out),
         "--weights", str(standin / "resnet50.pth"), *SMALL, "train.activation_checkpointing=true"]
    )  # fmt: skip
    assert rc == 2
    err = capsys.readouterr().err
    assert "train.activation_checkpointing=true: HotspotsTask does not support" in err
    assert not (out / "checkpoints").exists()
