"""The ViTDet-B Afformer (model.encoder=vitdet_b) beyond the frozen reference: the three weight layouts it
loads (files built here, at a small ViT size), the export in the authors' layout, the recipe preset and the
layer-wise lr decay in the optimiser's groups."""

from __future__ import annotations

import os
import pickle
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from maskahand.afformer.checkpoint import load_reference_checkpoint, to_reference_state_dict
from maskahand.afformer.model import build_model
from maskahand.afformer.param_groups import afformer_param_groups
from maskahand.afformer.vit_weights import load_vit_weights
from maskahand.core.config import AfformerConfig, FinetuneRecipe, OptimConfig, PretrainRecipe
from maskahand.core.configbase import load_config
from maskahand.runtime.weights import WeightsFileError
from maskahand.trainer.optim import build_optimizer

pytestmark = pytest.mark.usefixtures("torch_one_thread")

REFERENCE = Path(__file__).resolve().parent / "data" / "afformer_vitdet_reference" / "reference.pt"

# a small ViTDet: 4 blocks (1 and 3 global), the last 2 copied into the image path
SMALL = AfformerConfig(
    encoder="vitdet_b",
    hidden=128,
    heads=2,
    vit_dim=128,
    vit_depth=4,
    vit_heads=2,
    vit_window=4,
    vit_global_blocks=[1, 3],
    vit_img_size=64,
    vit_pretrain_size=32,
    vit_trainable_blocks=2,
    image_size=64,
    max_q_thw=[1, 4, 4],
    max_kv_thw=[8, 2, 2],
    num_heatmaps=3,
    num_actions=3,
)


def plain_vit_state(seed: int = 0, dim: int = 128, depth: int = 4) -> dict[str, np.ndarray]:
    """A plain ViT (detectron2 / MAE names below the prefix) with distinct values per tensor."""
    rs = np.random.RandomState(seed)
    state = {
        "pos_embed": rs.randn(1, 5, dim),
        "patch_embed.proj.weight": rs.randn(dim, 3, 16, 16),
        "patch_embed.proj.bias": rs.randn(dim),
    }
    for i in range(depth):
        grid = 4 if i in (1, 3) else 4  # window 4, global img_size 64 / 16 = 4: both 7-row tables
        p = f"blocks.{i}."
        state |= {
            p + "norm1.weight": rs.randn(dim),
            p + "norm1.bias": rs.randn(dim),
            p + "attn.qkv.weight": rs.randn(3 * dim, dim),
            p + "attn.qkv.bias": rs.randn(3 * dim),
            p + "attn.proj.weight": rs.randn(dim, dim),
            p + "attn.proj.bias": rs.randn(dim),
            p + "attn.rel_pos_h": rs.randn(2 * grid - 1, dim // 2),
            p + "attn.rel_pos_w": rs.randn(2 * grid - 1, dim // 2),
            p + "norm2.weight": rs.randn(dim),
            p + "norm2.bias": rs.randn(dim),
            p + "mlp.fc1.weight": rs.randn(4 * dim, dim),
            p + "mlp.fc1.bias": rs.randn(4 * dim),
            p + "mlp.fc2.weight": rs.randn(dim, 4 * dim),
            p + "mlp.fc2.bias": rs.randn(dim),
        }
    return {k: v.astype(np.float32) for k, v in state.items()}


def write_detectron2_pkl(path: Path, vit: dict[str, np.ndarray]) -> Path:
    model = {"backbone.net." + k: v for k, v in vit.items()}
    # what else a ViTDet Mask R-CNN checkpoint holds: the simple feature pyramid, heads, pixel statistics
    model["backbone.simfp_2.0.weight"] = np.zeros((128, 64, 2, 2), np.float32)
    model["roi_heads.box_predictor.cls_score.weight"] = np.zeros((81, 1024), np.float32)
    model["pixel_mean"] = np.zeros((3, 1, 1), np.float32)
    with open(path, "wb") as f:
        pickle.dump({"model": model, "__author__": "test", "matching_heuristics": True}, f, protocol=2)
    return path


def assert_vit_placed(model, vit: dict[str, np.ndarray], start: int = 2) -> None:
    enc = model.encoder.state_dict()
    torch.testing.assert_close(enc["pos_embed"], torch.from_numpy(vit["pos_embed"]))
    torch.testing.assert_close(
        enc["patch_embed.proj.weight"], torch.from_numpy(vit["patch_embed.proj.weight"])
    )
    for i in range(4):
        src = torch.from_numpy(vit[f"blocks.{i}.attn.qkv.weight"])
        if i < start:
            torch.testing.assert_close(enc[f"shared_blocks.{i}.attn.qkv.weight"], src)
        else:  # the authors deep-copy the last blocks: the video path and the trainable image path
            torch.testing.assert_close(enc[f"video_blocks.{i - start}.attn.qkv.weight"], src)
            torch.testing.assert_close(enc[f"image_blocks.{i - start}.attn.qkv.weight"], src)
        torch.testing.assert_close(
            enc[
                f"{'shared_blocks' if i < start else 'image_blocks'}.{i if i < start else i - start}.mlp.fc2.bias"
            ],
            torch.from_numpy(vit[f"blocks.{i}.mlp.fc2.bias"]),
        )


def test_detectron2_pickle_loads_every_vit_tensor(tmp_path):
    vit = plain_vit_state()
    path = write_detectron2_pkl(tmp_path / "model_final_61ccd1.pkl", vit)
    model = build_model(replace(SMALL, backbone_weights=str(path)))
    assert_vit_placed(model, vit)
    trainable = {n for n, p in model.encoder.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("image_blocks.") for n in trainable)


def test_detectron2_pickle_missing_or_misshaped_tensor_names_file_and_key(tmp_path):
    vit = plain_vit_state()
    del vit["blocks.1.attn.rel_pos_h"]
    path = write_detectron2_pkl(tmp_path / "short.pkl", vit)
    with pytest.raises(WeightsFileError, match=r"short\.pkl.*missing.*shared_blocks\.1\.attn\.rel_pos_h"):
        build_model(replace(SMALL, backbone_weights=str(path)))
    vit = plain_vit_state()
    vit["blocks.3.mlp.fc1.weight"] = vit["blocks.3.mlp.fc1.weight"][:10]
    path = write_detectron2_pkl(tmp_path / "shape.pkl", vit)
    with pytest.raises(
        WeightsFileError, match=r"shape\.pkl.*mis-shaped: blocks\.3\.mlp\.fc1\.weight: checkpoint \(10, 128\)"
    ):
        build_model(replace(SMALL, backbone_weights=str(path)))


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_detectron2_pickle_never_runs_code(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"model": {"backbone.net.pos_embed": _RunsCode()}}))
    with pytest.raises(WeightsFileError, match=r"evil\.pkl.*refusing to load"):
        build_model(replace(SMALL, backbone_weights=str(path)))
    assert not (tmp_path / "PWNED").exists()


def test_mae_weights_load_with_zero_relative_tables(tmp_path):
    vit = plain_vit_state(seed=1)
    mae = {k: torch.from_numpy(v) for k, v in vit.items() if ".rel_pos_" not in k}  # MAE has none
    mae |= {
        "cls_token": torch.zeros(1, 1, 128),
        "norm.weight": torch.ones(128),
        "norm.bias": torch.zeros(128),
    }
    path = tmp_path / "mae_pretrain_vit_base.pth"
    torch.save({"model": mae}, path)
    model = build_model(SMALL)
    with torch.no_grad():
        for p in model.encoder.parameters():
            p.fill_(0.5)  # so zero tables must come from the loader
    assert load_vit_weights(model.encoder, path) == "MAE ViT"
    assert_vit_placed(model, vit)
    tables = [v for k, v in model.encoder.state_dict().items() if ".rel_pos_" in k]
    assert len(tables) == 12 and all(bool((t == 0).all()) for t in tables)

    mae["blocks.0.attn.q_bias"] = torch.zeros(128)  # a tensor with no place: named in the error
    torch.save({"model": mae}, path)
    with pytest.raises(
        WeightsFileError, match=r"mae_pretrain_vit_base\.pth.*unexpected: blocks\.0\.attn\.q_bias"
    ):
        load_vit_weights(model.encoder, path)


def test_authors_checkpoint_layout_round_trips(tmp_path):
    """Our export uses the authors' names (those their code gave the frozen reference), and their
    Lightning checkpoint layout loads back, whole or as encoder weights."""
    torch.manual_seed(0)
    src = build_model(SMALL)
    exported = to_reference_state_dict(src)
    ref_names = set(torch.load(REFERENCE, weights_only=True)["shapes"])  # the authors' module names
    assert set(exported) == ref_names
    path = tmp_path / "afformer_vitdet_b_v1.ckpt"
    torch.save({"state_dict": {"network." + k: v for k, v in exported.items()}, "epoch": 3}, path)
    torch.manual_seed(1)
    dst = build_model(SMALL)
    report = load_reference_checkpoint(dst, path)
    assert report.ok and len(report.loaded) == len(exported)
    for k, v in src.state_dict().items():
        torch.testing.assert_close(dst.state_dict()[k], v, msg=k)
    torch.manual_seed(2)
    enc_only = build_model(replace(SMALL, backbone_weights=str(path)))
    for k, v in src.encoder.state_dict().items():
        torch.testing.assert_close(enc_only.encoder.state_dict()[k], v, msg=k)


def test_layer_decay_reaches_the_optimizer():
    model = build_model(replace(SMALL, lr_layer_decay=0.5, backbone_lr_factor=1.0))
    optim = OptimConfig(lr=1e-3, weight_decay=0.1)
    opt = build_optimizer(afformer_param_groups(model, optim), optim, torch.device("cpu"))
    lr_of = {}
    for g in opt.param_groups:
        for name in g["param_names"]:
            lr_of[name] = (g["lr"], g["weight_decay"])
    # detectron2's rule: block i is layer i + 1, factor 0.5 ** (depth + 1 - layer)
    assert lr_of["encoder.image_blocks.0.attn.qkv.weight"] == (pytest.approx(1e-3 * 0.5**2), 0.1)  # block 2
    assert lr_of["encoder.image_blocks.1.mlp.fc1.weight"] == (pytest.approx(1e-3 * 0.5), 0.1)  # block 3
    assert lr_of["encoder.image_blocks.1.norm1.weight"] == (pytest.approx(1e-3 * 0.5), 0.0)
    assert lr_of["decoder.cross_block.cross_attn.q_proj.weight"] == (pytest.approx(1e-3), 0.1)
    assert lr_of["decoder.cross_block.norm_q.weight"] == (pytest.approx(1e-3), 0.0)
    assert not any(
        n.startswith(("encoder.shared_blocks", "encoder.video_blocks", "encoder.pos_embed")) for n in lr_of
    )
    # the position table, when trained, takes no weight decay (the authors' pos_embed override)
    model.encoder.pos_embed.requires_grad_(True)
    groups = afformer_param_groups(model, optim)
    (g,) = [g for g in groups if "encoder.pos_embed" in g["param_names"]]
    assert g["weight_decay"] == 0.0 and g["lr"] == pytest.approx(1e-3 * 0.5**5)


def test_vitdet_preset_takes_the_authors_recipe(tmp_path):
    r = load_config(FinetuneRecipe, None, ["model.encoder=vitdet_b"])
    assert (r.optim.lr, r.optim.weight_decay, r.model.lr_layer_decay, r.model.backbone_lr_factor) == (
        2e-4,
        0.1,
        0.7,
        1.0,
    )
    assert (r.model.image_size, r.model.hidden, r.model.heads, r.model.heatmap_size) == (1024, 768, 12, 256)
    assert (r.train.num_frames, r.train.max_iters, r.eval.clip_length, r.eval.clip_stride) == (
        24,
        6000,
        24,
        12,
    )
    assert r.model.max_kv_thw == [24, 32, 32] and r.model.vit_trainable_blocks == 1
    # explicit settings still win, from the command line or a YAML file
    assert load_config(FinetuneRecipe, None, ["model.encoder=vitdet_b", "optim.lr=0.001"]).optim.lr == 1e-3
    yaml_file = tmp_path / "vit.yaml"
    yaml_file.write_text("model:\n  encoder: vitdet_b\ntrain:\n  max_iters: 10\n")
    r = load_config(FinetuneRecipe, yaml_file, [])
    assert (r.train.max_iters, r.optim.lr, r.model.hidden) == (10, 2e-4, 768)
    # the R50 recipe is untouched; pretraining keeps its 32 mined frames
    r = load_config(FinetuneRecipe, None, [])
    assert (r.model.encoder, r.optim.lr, r.model.lr_layer_decay, r.model.backbone_lr_factor) == (
        "r50_fpn",
        3e-4,
        1.0,
        0.1,
    )
    p = load_config(PretrainRecipe, None, ["model.encoder=vitdet_b"])
    assert (p.optim.lr, p.model.image_size, p.train.num_frames, p.model.max_kv_thw[0]) == (2e-4, 1024, 32, 32)


def test_loss_pools_input_size_targets_to_the_heatmap_size():
    model = build_model(SMALL).eval()
    video = torch.randint(0, 256, (1, 3, 3, 64, 64), dtype=torch.uint8)
    image = torch.randint(0, 256, (1, 3, 64, 64), dtype=torch.uint8)
    with torch.no_grad():
        out = model(video, image)
    assert out.heatmap_logits.shape == (1, 3, 16, 16)  # image_size / 4
    target = torch.rand(1, 3, 64, 64)
    pooled = torch.nn.functional.avg_pool2d(target, 4)
    a, b = model.loss(out, target), model.loss(out, pooled)
    assert a.total.item() == pytest.approx(b.total.item(), rel=1e-6)
    with pytest.raises(ValueError, match="not a multiple"):
        model.loss(out, torch.rand(1, 3, 30, 30))


def test_activation_checkpointing_gives_the_same_gradients():
    from maskahand.afformer.actckpt import enable_activation_checkpointing

    video = torch.randint(0, 256, (2, 3, 3, 64, 64), dtype=torch.uint8)
    image = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    target = torch.rand(2, 3, 16, 16)
    grads = []
    for checkpointed in (False, True):
        torch.manual_seed(0)
        model = build_model(replace(SMALL, vit_drop_path=0.5)).train()  # stochastic depth draws in the blocks
        if checkpointed:
            assert enable_activation_checkpointing(model) == 3  # 2 image blocks + the decoder's cross block
        torch.manual_seed(1)
        model.loss(model(video, image, num_frames=[3, 2]), target).total.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and any(k.startswith("encoder.image_blocks") for k in grads[0])
    for name, g in grads[0].items():
        torch.testing.assert_close(grads[1][name], g, msg=name)
