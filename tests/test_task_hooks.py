"""What each recipe states for the engine about its own model: its AdamW parameter groups and whether
(and how) it checkpoints activations. The engine only builds the optimiser and asks the task.

Afformer's groups are checked tensor by tensor against the rules written out here (PAPER_FACTS: AdamW
lr 3e-4, weight decay 0.05, backbone lr x 0.1; detectron2's ``weight_decay_norm=0``: no decay only on
parameters owned by torch normalisation modules) and against the group sizes the trainer's former
default (``trainer.optim.afformer_param_groups`` at commit 84fb357) gave for the same tiny models.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import pytest
from torch import nn

from maskahand.core.config import FinetuneRecipe, HotspotsRecipe, OptimConfig, PretrainRecipe, TrainConfig
from maskahand.core.configbase import ConfigError, apply_overrides, load_config
from maskahand.evaluation.benchmark import Benchmark
from maskahand.finetune.task import FinetuneTask
from maskahand.pretrain.task import PretrainTask
from maskahand.trainer import TrainTask, fit

sys.path.insert(0, str(Path(__file__).parent))
from test_pretrain_support import TINY, write_maskahand_shards  # noqa: E402
from test_trainer_support import ToyTask  # noqa: E402

pytestmark = pytest.mark.usefixtures("torch_one_thread")

# detectron2 matches these torch module types (by isinstance; none of ours subclasses them)
TORCH_NORMS = {
    "BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "SyncBatchNorm", "GroupNorm",
    "InstanceNorm1d", "InstanceNorm2d", "InstanceNorm3d", "LayerNorm", "LocalResponseNorm",
}  # fmt: skip


def authors_rule(model: nn.Module, lr: float, wd: float, backbone_factor: float) -> dict[str, tuple]:
    """name -> (group, lr, weight decay) for every trainable parameter, from the rules alone."""
    out = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        owner = model.get_submodule(name.rpartition(".")[0])
        no_decay = type(owner).__name__ in TORCH_NORMS
        encoder = name.startswith("encoder.")
        group = ("encoder" if encoder else "head") + ("_no_decay" if no_decay else "")
        out[name] = (
            group,
            pytest.approx(lr * (backbone_factor if encoder else 1.0)),
            0.0 if no_decay else wd,
        )
    return out


def per_parameter(groups: list[dict], model: nn.Module) -> dict[str, tuple]:
    names = {id(p): n for n, p in model.named_parameters()}
    out = {}
    for g in groups:
        for p in g["params"]:
            assert names[id(p)] not in out, f"{names[id(p)]} in two groups"
            out[names[id(p)]] = (g["name"], g["lr"], g["weight_decay"])
    return out


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    return write_maskahand_shards(tmp_path_factory.mktemp("maskahand"), 2, per_shard=2)


def test_pretrain_task_states_the_authors_afformer_groups(shards):
    recipe = load_config(PretrainRecipe, None, TINY)
    task = PretrainTask(recipe, shards=[str(shards)])
    model = task.build_model()
    groups = task.param_groups(model, recipe.optim)
    got = per_parameter(groups, model)
    assert got == authors_rule(model, 3e-4, 0.05, 0.1)
    # the trainer's former default gave these groups (name, tensors) for the same model
    assert [(g["name"], len(g["params"])) for g in groups] == [
        ("encoder", 60),
        ("head", 34),
        ("head_no_decay", 8),
    ]
    # frozen ResNet stages are left out
    frozen_recipe = load_config(PretrainRecipe, None, [*TINY, "model.trainable_backbone_layers=3"])
    frozen = PretrainTask(frozen_recipe, shards=[str(shards)])
    model = frozen.build_model()
    assert not model.encoder.body.layer1[0].conv1.weight.requires_grad
    assert per_parameter(frozen.param_groups(model, recipe.optim), model) == authors_rule(
        model, 3e-4, 0.05, 0.1
    )


def test_finetune_task_states_the_authors_afformer_groups():
    recipe = load_config(FinetuneRecipe, None, TINY)
    bench = Benchmark("opra", "train", ["hold", "push"], [], "annotations.json", None)
    task = FinetuneTask(recipe, bench, None, "none")
    model = task.build_model()
    groups = task.param_groups(model, recipe.optim)
    assert per_parameter(groups, model) == authors_rule(model, 3e-4, 0.05, 0.1)
    assert [(g["name"], len(g["params"])) for g in groups] == [
        ("encoder", 60),
        ("head", 39),
        ("head_no_decay", 8),
    ]


def hotspots_task(tmp_path: Path, *overrides: str):
    from maskahand.hotspots.data import TrainingSet
    from maskahand.hotspots.model import uninitialised_model
    from maskahand.hotspots.task import HotspotsTask

    recipe = apply_overrides(HotspotsRecipe(), ["train.device=cpu", "train.image_every=0", *overrides])
    tset = TrainingSet(dataset="opra", verbs=["hold", "push"], items=[], root=tmp_path)
    model = uninitialised_model(replace(recipe.model, hidden=16))
    return recipe, HotspotsTask(recipe, tset, model=model), model


def test_hotspots_task_states_one_group_of_its_trainable_parts_without_decoupled_decay(tmp_path):
    recipe, task, model = hotspots_task(tmp_path)
    groups = task.param_groups(model, recipe.optim)
    assert [g["name"] for g in groups] == ["hotspots"]
    # their Adam: lr 1e-4 for everything trained; the weight decay 5e-4 is their coupled L2, added to the
    # loss by the task, so AdamW's decoupled decay must be 0
    assert groups[0]["lr"] == pytest.approx(1e-4) and groups[0]["weight_decay"] == 0.0
    names = {n for n, p in model.named_parameters() for q in groups[0]["params"] if p is q}
    assert names == {n for n, _ in model.named_parameters() if not n.startswith("backbone.")}
    assert len(groups[0]["params"]) == len(names)


def test_a_task_without_groups_is_refused_rather_than_given_a_models_groups():
    class NoGroups(TrainTask):
        pass

    with pytest.raises(NotImplementedError):
        NoGroups().param_groups(nn.Linear(2, 2), OptimConfig())


# -- activation checkpointing -------------------------------------------------------------------------


def _train(**kw) -> TrainConfig:
    base = dict(
        max_iters=1, batch_size=4, log_every=1, device="cpu", image_every=0, activation_checkpointing=True
    )
    base.update(kw)
    return TrainConfig(**base)


def test_a_hotspots_recipe_with_activation_checkpointing_fails_naming_the_key(tmp_path):
    recipe, task, _ = hotspots_task(tmp_path, "train.activation_checkpointing=true")
    with pytest.raises(ConfigError, match=r"train\.activation_checkpointing") as e:
        fit(task, recipe.optim, recipe.train, tmp_path / "run", config=recipe)
    assert "Hotspots" in str(e.value)
    assert not (tmp_path / "run" / "checkpoints").exists()  # refused before any step


def test_a_task_that_does_not_say_how_refuses_the_flag_and_trains_without_it(tmp_path):
    with pytest.raises(ConfigError, match=r"train\.activation_checkpointing=true.*ToyTask"):
        fit(ToyTask(), OptimConfig(precision="fp32"), _train(), tmp_path / "on")
    fit(ToyTask(), OptimConfig(precision="fp32"), _train(activation_checkpointing=False), tmp_path / "off")
    assert (tmp_path / "off" / "checkpoints").is_dir()


def test_a_protocol_only_task_without_the_hook_is_refused_too(tmp_path):
    class Plain:  # TrainTaskProtocol's methods, not a TrainTask subclass
        inner = ToyTask()
        build_model, param_groups = inner.build_model, inner.param_groups
        train_batches, training_step = inner.train_batches, inner.training_step

    with pytest.raises(ConfigError, match=r"train\.activation_checkpointing=true: Plain does not support"):
        fit(Plain(), OptimConfig(precision="fp32"), _train(), tmp_path / "run")


class Recorded(PretrainTask):
    """The pretraining task, keeping the model the engine trained."""

    def build_model(self) -> nn.Module:
        self.model = super().build_model()
        return self.model


def test_the_engine_has_an_afformer_task_checkpoint_its_blocks(shards, tmp_path):
    recipe = load_config(
        PretrainRecipe, None, [*TINY, "train.max_iters=1", "train.activation_checkpointing=true"]
    )
    task = Recorded(recipe, shards=[str(shards)])
    fit(task, recipe.optim, recipe.train, tmp_path / "run")
    net = task.model
    checkpointed = [n for n, m in net.named_modules() if getattr(m, "_maskahand_ckpt", False)]
    assert len(checkpointed) == 17  # the 16 ResNet-50 bottlenecks + the decoder block
    assert "decoder.block" in checkpointed and "encoder.body.layer4.2" in checkpointed


def test_the_finetune_task_checkpoints_the_same_blocks_through_its_hook():
    recipe = load_config(FinetuneRecipe, None, TINY)
    bench = Benchmark("opra", "train", ["hold", "push"], [], "annotations.json", None)
    model = FinetuneTask(recipe, bench, None, "none").build_model()
    FinetuneTask(recipe, bench, None, "none").enable_activation_checkpointing(model)
    checkpointed = [n for n, m in model.named_modules() if getattr(m, "_maskahand_ckpt", False)]
    assert len(checkpointed) == 17 and "decoder.block" in checkpointed
