"""``maskahand finetune`` with ``model.encoder=vitdet_b`` (a reduced ViT) on the stand-in OPRA tree built from
the shared OPRA annotations: it trains, evaluates during training, exports in the authors' layout, and both
the training checkpoint and the exported file evaluate with ``maskahand eval``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from maskahand.cli import main
from tests.eval_standin import make_opra_tree, pick_entries

pytestmark = pytest.mark.usefixtures("torch_one_thread")

TINY_VIT = [
    "model.encoder=vitdet_b", "model.hidden=64", "model.heads=1", "model.vit_dim=64", "model.vit_heads=2",
    "model.vit_depth=3", "model.vit_global_blocks=[2]", "model.vit_window=2", "model.vit_img_size=64",
    "model.vit_pretrain_size=32", "model.vit_trainable_blocks=1", "model.image_size=64",
    "model.max_q_thw=[1,4,4]", "model.max_kv_thw=[8,2,2]", "train.num_frames=4", "train.batch_size=2",
    "train.max_iters=2", "train.eval_every=2", "train.device=cpu", "train.workers=0", "train.image_every=0",
    "train.log_every=1", "optim.precision=fp32", "eval.max_clips=1", "eval.clip_batch=1", "eval.device=cpu",
    "eval.clip_length=4", "eval.clip_stride=4",
]  # fmt: skip


@pytest.fixture(scope="module")
def small_tree(shared_data, tmp_path_factory) -> Path:
    real = json.loads((shared_data / "opra" / "test.json").read_text())
    return make_opra_tree(
        tmp_path_factory.mktemp("opra_vit"), shared_data, pick_entries(real, 2, 4), clip_frames=4
    )


@pytest.mark.slow
def test_vitdet_finetune_trains_evaluates_and_exports(small_tree, tmp_path):
    run = tmp_path / "run"
    args = ["finetune", "--dataset", "opra", "--data", str(small_tree), "--init", "none", "--out", str(run)]
    assert main([*args, *TINY_VIT]) == 0
    saved = (run / "config.yaml").read_text()
    assert (
        "encoder: vitdet_b" in saved and "lr_layer_decay: 0.7" in saved and "lr: 0.0002" in saved
    )  # the preset
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert any("val_kld" in json.dumps(r) for r in records)
    assert any("encoder_x0.7" in json.dumps(r) for r in records)  # the layer-decayed group's lr is logged
    exported = torch.load(run / "afformer_finetuned.pth", weights_only=True)
    names = set(exported.get("state_dict", exported))
    names = {n.removeprefix("network.") for n in names}
    assert {
        "decoder.v3d.weight",
        "decoder.cross_block_3d.attn.rel_pos_t",
        "encoder.image_blocks.0.attn.qkv.weight",
    } <= names
    for checkpoint in (sorted((run / "checkpoints").glob("step_*.pt"))[-1], run / "afformer_finetuned.pth"):
        out = tmp_path / f"eval_{checkpoint.stem}"
        ev = [
            "eval",
            "--data",
            str(small_tree),
            "--checkpoint",
            str(checkpoint),
            "--out",
            str(out),
            "--protocol",
            "256",
        ]
        assert (
            main([*ev, "eval.image_size=64", "eval.max_clips=1", "eval.device=cpu", "eval.clip_length=4"])
            == 0
        )
        metrics = json.loads((out / "metrics.json").read_text())["protocols"]["256"]
        assert metrics["top1"] is not None and metrics["kld"] > 0
