"""``maskahand finetune`` on the stand-in OPRA tree: a short run on the shared trainer, head re-initialisation
from a 1-heatmap checkpoint, training targets and flips."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from maskahand.cli import main
from maskahand.evaluation.benchmark import Entry
from tests.eval_standin import make_opra_tree, pick_entries
from tests.test_eval_e2e import save_checkpoint

pytestmark = pytest.mark.usefixtures("torch_one_thread")
TINY = [
    "model.hidden=32", "model.heads=2", "model.max_q_thw=[1,16,16]", "model.max_kv_thw=[8,8,8]",
    "model.image_size=64", "train.num_frames=4", "train.batch_size=2", "train.max_iters=2", "train.eval_every=2",
    "train.device=cpu", "train.workers=0", "train.image_every=0", "train.log_every=1", "optim.precision=fp32",
    "eval.max_clips=1", "eval.clip_batch=1", "eval.device=cpu",
]  # fmt: skip


@pytest.fixture(scope="module")
def small_tree(shared_data, tmp_path_factory) -> Path:
    real = json.loads((shared_data / "opra" / "test.json").read_text())
    return make_opra_tree(
        tmp_path_factory.mktemp("opra_ft"), shared_data, pick_entries(real, 2, 4), clip_frames=4
    )


def test_one_heatmap_checkpoint_loads_all_but_the_heads(tmp_path, caplog):
    from maskahand.afformer import build_model
    from maskahand.core.config import AfformerConfig
    from maskahand.finetune.task import load_init

    ckpt = save_checkpoint(tmp_path / "zs.pt", heatmaps=1, actions=0)
    pre = torch.load(ckpt, weights_only=True)["model"]
    cfg = AfformerConfig(
        hidden=32, heads=2, num_heatmaps=7, num_actions=7, max_kv_thw=[8, 8, 8], max_q_thw=[1, 16, 16]
    )
    model = build_model(cfg)
    # a checkpoint that differs beyond the heads is refused
    enc = next(k for k in pre if k.startswith("encoder.") and k.endswith("weight") and pre[k].dim() == 4)
    torch.save({**pre, enc: pre[enc][:1]}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="beyond its heads"):
        load_init(model, str(tmp_path / "other.pt"))
    with caplog.at_level("WARNING"):
        names = load_init(model, str(ckpt))
    assert names and all(
        n.startswith("predictor.heatmap.up2.") or n.startswith("predictor.action.") for n in names
    )
    assert "predictor.heatmap.up2.weight" in names and "predictor.action.fc.weight" in names
    assert "re-initialised the heads" in caplog.text
    state = model.state_dict()
    assert torch.equal(state["predictor.heatmap.up1.weight"], pre["predictor.heatmap.up1.weight"])
    assert torch.equal(state[enc], pre[enc])


def test_training_target_and_flip():
    from maskahand.finetune.task import hflip, training_target

    e = Entry(0, "i", "v", 32, 32, actions=(2, 2, 5), points=(((1.0, 1.0),), ((30.0, 3.0),), ((16.0, 16.0),)))
    heat, hot = training_target(e, 7, 32)
    assert hot.tolist() == [0, 0, 1, 0, 0, 1, 0]
    assert heat[[0, 1, 3, 4, 6]].abs().sum() == 0 and heat[2].sum() > 0 and heat[5].sum() > 0
    assert divmod(int(heat[5].argmax()), 32) == (16, 16)
    x = torch.arange(2 * 3).view(2, 1, 3).float()
    assert hflip(x, torch.tensor([True, False])).tolist() == [[[2.0, 1.0, 0.0]], [[3.0, 4.0, 5.0]]]


@pytest.mark.slow
def test_short_finetune_from_a_pretrained_checkpoint(small_tree, tmp_path):
    ckpt = save_checkpoint(tmp_path / "zs.pt", heatmaps=1, actions=0)
    run = tmp_path / "run"
    args = [
        "finetune",
        "--dataset",
        "opra",
        "--data",
        str(small_tree),
        "--init",
        str(ckpt),
        "--out",
        str(run),
    ]
    assert main([*args, *TINY]) == 0
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert any("val_kld" in json.dumps(r) for r in records)  # the periodic evaluation ran and was logged
    assert (run / "afformer_finetuned.pth").exists()
    # the fine-tuned checkpoint evaluates per action, with top-1
    out = tmp_path / "eval"
    final = sorted((run / "checkpoints").glob("step_*.pt"))[-1]
    ev = [
        "eval",
        "--data",
        str(small_tree),
        "--checkpoint",
        str(final),
        "--out",
        str(out),
        "--protocol",
        "256",
    ]
    assert main([*ev, "eval.image_size=64", "eval.max_clips=1", "eval.device=cpu"]) == 0
    assert json.loads((out / "metrics.json").read_text())["protocols"]["256"]["top1"] is not None
