"""Afformer and the R50-Deconv baseline end to end on the CPU at small sizes (random init)."""

from __future__ import annotations

import pytest
import torch

from maskahand.afformer.model import build_model
from maskahand.core.config import AfformerConfig

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _clip(batch: int, frames: int, size: int = 128, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, frames, 3, size, size, generator=g), torch.rand(
        batch, 3, size, size, generator=g
    )


def _has_grad(module: torch.nn.Module, name: str) -> bool:
    grad = dict(module.named_parameters())[name].grad
    return grad is not None and bool(grad.abs().sum() > 0)


@pytest.fixture(scope="module")
def pretrain_model():
    torch.manual_seed(0)
    return build_model(AfformerConfig(num_heatmaps=1, num_actions=0))


@pytest.fixture(scope="module")
def opra_model():
    torch.manual_seed(0)
    return build_model(AfformerConfig(num_heatmaps=7, num_actions=7))


def test_pretraining_head_forward_backward(pretrain_model):
    video, image = _clip(2, 4)
    out = pretrain_model(video, image)
    assert out.heatmap_logits.shape == (2, 1, 128, 128) and out.action_logits is None
    target = torch.zeros(2, 1, 128, 128)
    target[:, :, 40:60, 50:90] = 1.0
    terms = pretrain_model.loss(out, target)
    assert terms.action is None and terms.total.item() > 0
    pretrain_model.zero_grad()
    terms.total.backward()
    for name in (
        "decoder.block.cross_attn.rel_pos_t",
        "decoder.block.self_attn.rel_pos_h",
        "decoder.temporal_pyramid.down2.weight",
        "decoder.level_embeds.0",
        "predictor.heatmap.up2.weight",
        "encoder.fpn.layer_blocks.0.0.weight",
        "encoder.body.layer4.2.conv3.weight",
        "encoder.body.layer2.0.conv1.weight",
    ):
        assert _has_grad(pretrain_model, name), name
    # default trainable_backbone_layers=5 (the authors'): the whole ResNet trains, conv1 included
    assert _has_grad(pretrain_model, "encoder.body.conv1.weight")


def test_opra_heads_forward_backward_and_predict(opra_model):
    video, image = _clip(2, 4, seed=1)
    opra_model.train()
    out = opra_model(video, image)
    assert out.heatmap_logits.shape == (2, 7, 128, 128) and out.action_logits.shape == (2, 7)
    target = torch.rand(2, 1, 128, 128)
    hot = torch.zeros(2, 7)
    hot[0, [0, 3]] = hot[1, 6] = 1  # multi-label: sample 0 carries two actions
    terms = opra_model.loss(out, target.expand(-1, 7, -1, -1), hot)
    assert terms.action is not None and terms.action.item() > 0
    opra_model.zero_grad()
    terms.total.backward()
    assert _has_grad(opra_model, "predictor.action.fc.weight")
    assert _has_grad(opra_model, "predictor.action.conv.weight")
    assert _has_grad(opra_model, "encoder.body.layer3.0.conv2.weight")
    pred = opra_model.predict(video[:1, :2], image[:1])
    torch.testing.assert_close(pred.heatmaps.sum(dim=(2, 3)), torch.ones(1, 7))
    with torch.no_grad():
        logits = opra_model(video[:1, :2], image[:1]).action_logits
    torch.testing.assert_close(pred.actions, 1 / (1 + torch.exp(-logits)))  # sigmoid, not softmax
    assert (pred.heatmaps >= 0).all()


def test_videos_of_different_lengths_in_one_batch(pretrain_model):
    pretrain_model.eval()
    video, image = _clip(2, 4, seed=2)
    video[1, 3:] = 5.0  # padding content must not matter
    with torch.no_grad():
        batched = pretrain_model(video, image, num_frames=[4, 3]).heatmap_logits
        alone0 = pretrain_model(video[:1], image[:1]).heatmap_logits
        alone1 = pretrain_model(video[1:, :3], image[1:]).heatmap_logits
    torch.testing.assert_close(batched[:1], alone0, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(batched[1:], alone1, atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="num_frames"):
        pretrain_model(video, image, num_frames=[5, 3])
    with pytest.raises(ValueError, match="video must be"):
        pretrain_model(video[:, :, :2], image)


def test_attention_modes_agree_on_the_full_model(pretrain_model):
    video, image = _clip(1, 3, size=64, seed=3)
    results = []
    for mode in ("reference", "efficient"):
        pretrain_model.set_attention_mode(mode)
        pretrain_model.zero_grad()
        out = pretrain_model(video, image).heatmap_logits
        out.square().mean().backward()
        grads = {
            n: dict(pretrain_model.named_parameters())[n].grad.clone()
            for n in (
                "decoder.block.cross_attn.rel_pos_h",
                "decoder.block.self_attn.qkv.weight",
                "encoder.fpn.inner_blocks.1.0.weight",
            )
        }
        results.append((out.detach(), grads))
    pretrain_model.set_attention_mode("efficient")
    torch.testing.assert_close(results[1][0], results[0][0], atol=1e-4, rtol=1e-4)
    for name, grad in results[0][1].items():
        torch.testing.assert_close(results[1][1][name], grad, atol=1e-5, rtol=1e-3, msg=name)


def test_frozen_encoder_gets_no_gradient():
    torch.manual_seed(0)
    model = build_model(AfformerConfig(freeze_backbone=True))
    video, image = _clip(1, 2, size=64, seed=4)
    model(video, image).heatmap_logits.logsumexp(dim=(2, 3)).sum().backward()
    assert all(p.grad is None and not p.requires_grad for p in model.encoder.parameters())
    assert _has_grad(model, "decoder.block.mlp.fc1.weight")
    names = [g["name"] for g in model.param_groups(3e-4, 0.05)]
    assert names == ["head", "head_no_decay"]


def test_param_groups_scale_the_backbone(opra_model):
    groups = opra_model.param_groups(3e-4, 0.05)
    by_name = {g["name"]: g for g in groups}
    assert by_name["backbone"]["lr"] == pytest.approx(3e-5)
    assert by_name["head"]["lr"] == pytest.approx(3e-4)
    assert by_name["head_no_decay"]["weight_decay"] == 0.0 and by_name["head"]["weight_decay"] == 0.05
    grouped = [id(p) for g in groups for p in g["params"]]
    trainable = [id(p) for p in opra_model.parameters() if p.requires_grad]
    assert sorted(grouped) == sorted(trainable)


def test_r50_deconv_baseline_same_interface():
    torch.manual_seed(0)
    model = build_model(AfformerConfig(arch="r50_deconv", num_heatmaps=7, num_actions=7))
    video, image = _clip(2, 3, size=64, seed=5)
    out = model(video, image, num_frames=[3, 2])
    assert out.heatmap_logits.shape == (2, 7, 64, 64) and out.action_logits.shape == (2, 7)
    model.loss(out, torch.rand(2, 7, 64, 64), torch.tensor([1, 2])).total.backward()
    assert _has_grad(model, "deconv.0.0.weight") and _has_grad(model, "encoder.body.layer4.0.conv1.weight")
    model.eval()
    with torch.no_grad():
        batched = model(video, image, num_frames=[3, 2]).heatmap_logits
        alone = model(video[1:, :2], image[1:]).heatmap_logits
    torch.testing.assert_close(batched[1:], alone, atol=1e-4, rtol=1e-4)


def test_bf16_autocast_runs_both_attention_modes():
    """The mixed-precision path (CUDA in training) on the CPU: dtypes line up, modes agree roughly."""
    torch.manual_seed(0)
    model = build_model(AfformerConfig(num_heatmaps=7, num_actions=7))
    video, image = _clip(2, 3, size=64, seed=6)
    target = torch.rand(2, 1, 64, 64)
    losses = []
    for mode in ("efficient", "reference"):
        model.set_attention_mode(mode)
        model.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(video, image, num_frames=[3, 2])
            loss = model.loss(out, target, torch.tensor([1, 2])).total
        assert out.heatmap_logits.dtype == torch.bfloat16 and loss.dtype == torch.float32
        loss.backward()
        assert _has_grad(model, "decoder.block.cross_attn.rel_pos_t")
        losses.append(loss.item())
    assert losses[0] == pytest.approx(losses[1], rel=2e-2)


def test_config_rejects_inconsistent_model_settings():
    from maskahand.core.configbase import ConfigError, apply_overrides

    with pytest.raises(ConfigError, match="divisible"):
        apply_overrides(AfformerConfig(), ["heads=3"])
    with pytest.raises(ConfigError, match="trainable_backbone_layers"):
        apply_overrides(AfformerConfig(), ["trainable_backbone_layers=6"])
    with pytest.raises(ValueError, match="unsupported pyramid level"):
        build_model(AfformerConfig(image_levels=["p5", "p4"]))


def test_time_table_is_sized_by_the_clip_length_config():
    from maskahand.core.config import FinetuneRecipe, PretrainRecipe
    from maskahand.core.configbase import ConfigError, load_config

    with pytest.raises(ConfigError, match=r"train\.num_frames=64 .*model\.max_kv_thw=\[64, 32, 32\]"):
        load_config(PretrainRecipe, overrides=["train.num_frames=64"])
    recipe = load_config(PretrainRecipe, overrides=["train.num_frames=64", "model.max_kv_thw=[64,32,32]"])
    assert recipe.model.max_kv_thw[0] == 64
    assert load_config(FinetuneRecipe).model.max_kv_thw[0] >= load_config(FinetuneRecipe).train.num_frames
    torch.manual_seed(0)
    model = build_model(AfformerConfig(max_kv_thw=[4, 32, 32])).eval()  # time table of 7 rows
    assert model.decoder.block.cross_attn.rel_pos_t.shape[0] == 7
    video, image = _clip(1, 8, size=64, seed=7)
    with pytest.raises(ValueError, match=r"8 frames .*model\.max_kv_thw\[0\]"):
        model(video, image)
    with torch.no_grad():
        assert model(video[:, :7], image).heatmap_logits.shape == (1, 1, 64, 64)
