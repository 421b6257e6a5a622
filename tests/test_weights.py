"""runtime.weights: every weights file kind read from files the tests write, unwrap/rename, the strict
loader's report, and one error class for every former call site."""

from __future__ import annotations

import argparse
import io
import os
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from maskahand.core.cli_util import EXIT_FAILURE, run_handler
from maskahand.runtime.weights import (
    LoadReport,
    RestrictedUnpickler,
    WeightsFileError,
    WeightsMismatchError,
    load_strict,
    load_torch_file,
    match_state_dict,
    read_pickle,
    read_weights,
    rename_by_prefix,
    unwrap_state_dict,
)

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def truncated_torch_file(path: Path) -> Path:
    torch.save({"model": {"w": torch.arange(1000.0)}}, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


# -- reading ---------------------------------------------------------------------------------------


def test_torch_file_is_read_and_a_missing_or_truncated_one_names_the_file(tmp_path):
    torch.save({"w": torch.ones(2), "args": argparse.Namespace(lr=0.1)}, tmp_path / "ok.pt")
    got = load_torch_file(tmp_path / "ok.pt", safe_globals=[argparse.Namespace])
    assert torch.equal(got["w"], torch.ones(2)) and got["args"].lr == 0.1
    with pytest.raises(WeightsFileError, match=r"missing\.pt: backbone weights file does not exist; set X"):
        load_torch_file(tmp_path / "missing.pt", "backbone weights", hint="set X")
    bad = truncated_torch_file(tmp_path / "cut.pt")
    with pytest.raises(WeightsFileError, match=r"cut\.pt: cannot read hircnn weights as a torch file") as err:
        read_weights(bad, "hircnn weights")
    assert type(err.value) is WeightsFileError


class _RunsCode:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))  # unpickling it would create a file


def test_torch_file_never_runs_pickled_code(tmp_path):
    victim = tmp_path / "pwned.txt"
    path = tmp_path / "evil.pth"
    torch.save({"w": torch.ones(1), "x": _RunsCode(str(victim))}, path)
    with pytest.raises(WeightsFileError, match=r"evil\.pth: cannot read"):
        read_weights(path)
    assert not victim.exists()
    torch.save({"w": torch.ones(1), "args": argparse.Namespace()}, path)
    with pytest.raises(WeightsFileError, match=r"evil\.pth"):  # a plain class only when allowed
        load_torch_file(path)


def test_pickle_of_numpy_arrays_is_read(tmp_path):
    arrays = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.array([7], dtype=np.int64)}
    path = tmp_path / "model_final.pkl"
    with open(path, "wb") as f:  # protocol 2: as detectron2's Python-2-era checkpoints
        pickle.dump({"model": arrays, "__author__": "test"}, f, protocol=2)
    state = unwrap_state_dict(read_weights(path), str(path), ("model",))
    assert set(state) == {"a", "b"}
    assert torch.equal(state["a"], torch.arange(6.0).view(2, 3)) and state["b"].dtype == torch.int64


def test_restricted_unpickler_refuses_globals_and_persistent_ids_without_running_them(tmp_path):
    victim = tmp_path / "pwned.txt"
    evil = pickle.dumps({"model": {"w": _RunsCode(str(victim))}})
    with pytest.raises(pickle.UnpicklingError, match=r"refusing to load io\.open: only a list of bytes"):
        RestrictedUnpickler(io.BytesIO(evil), accepts="a list of bytes").load()
    path = tmp_path / "evil.pkl"
    path.write_bytes(evil)
    with pytest.raises(
        WeightsFileError, match=r"evil\.pkl: cannot read ViT weights .*refusing to load io\.open"
    ):
        read_weights(path, "ViT weights")  # numpy's array globals are allowed, nothing else
    assert not victim.exists()

    class WithIds(pickle.Pickler):
        def persistent_id(self, obj: Any) -> Any:
            return "storage-0" if isinstance(obj, bytes) else None

    buf = io.BytesIO()
    WithIds(buf).dump([b"x"])
    with pytest.raises(pickle.UnpicklingError, match="refusing persistent ids"):
        RestrictedUnpickler(io.BytesIO(buf.getvalue())).load()
    assert RestrictedUnpickler(io.BytesIO(pickle.dumps([b"x", 1.5, {"k": None}]))).load() == [
        b"x",
        1.5,
        {"k": None},
    ]


def test_truncated_pickle_names_the_file(tmp_path):
    path = tmp_path / "half.pkl"
    path.write_bytes(pickle.dumps({"model": {"a": np.zeros(100)}}, protocol=2)[:40])
    with pytest.raises(WeightsFileError, match=r"half\.pkl: cannot read weights as a pickle of numpy arrays"):
        read_pickle(path)


def test_safetensors_file(tmp_path):
    path = tmp_path / "w.safetensors"
    try:
        from safetensors.torch import save_file
    except ImportError:  # not a project dependency: the error says what is needed
        path.write_bytes(b"{}")
        with pytest.raises(WeightsFileError, match=r"w\.safetensors: .*needs the safetensors package"):
            read_weights(path)
        return
    save_file({"w": torch.arange(4.0)}, str(path))
    assert torch.equal(read_weights(path)["w"], torch.arange(4.0))
    path.write_bytes(b"\x10\x00")
    with pytest.raises(WeightsFileError, match=r"w\.safetensors: cannot read"):
        read_weights(path)


# -- unwrapping and renaming -----------------------------------------------------------------------


def test_unwrap_finds_the_state_dict_and_strips_a_prefix():
    w = torch.ones(1)
    assert unwrap_state_dict({"net": {"a": w}, "epoch": 3}, "f", ("net", "model")) == {"a": w}
    # the first container that holds a mapping wins; a non-mapping entry of that name is skipped
    assert unwrap_state_dict({"model": 1, "state_dict": {"b": w}}, "f", ("model", "state_dict")) == {"b": w}
    dp = {"module.a": w, "module.b.c": w}
    assert list(unwrap_state_dict(dp, "f", (), "module.")) == ["a", "b.c"]
    lightning = {"state_dict": {"network.x": w, "loss.weight": w}}
    assert list(unwrap_state_dict(lightning, "f", ("state_dict",), "network.")) == ["x"]
    assert list(unwrap_state_dict({"x": w}, "f", (), "network.")) == ["x"]  # no prefix: unchanged


@pytest.mark.parametrize(
    ("obj", "reason"),
    [
        ({"model": {"a": torch.ones(1), "epoch": 3}}, r"epoch is a int"),
        ({"model": {}}, "found an empty mapping"),
        ([torch.ones(1)], "found a list"),
    ],
)
def test_unwrap_refuses_what_is_not_a_state_dict(obj, reason):
    with pytest.raises(
        WeightsFileError, match=rf"^w\.pt: does not hold a state dict of tensors .*{reason}.*; expected L"
    ):
        unwrap_state_dict(obj, "w.pt", ("model",), expected="L")


def test_rename_by_prefix_longest_match_and_exact_names():
    table = [("a.", "x."), ("a.b.", "y."), ("h0", "state0")]
    assert rename_by_prefix("a.b.c", table) == "y.c"  # the longer prefix wins, whatever the order
    assert rename_by_prefix("a.c", table) == "x.c"
    assert rename_by_prefix("h0", table) == "state0"
    assert rename_by_prefix("h01", table) is None  # without a dot, a name matches only itself
    assert rename_by_prefix("z.w", table) is None


# -- strict loading --------------------------------------------------------------------------------


class Tiny(nn.Module):
    def __init__(self, out: int = 3) -> None:
        super().__init__()
        self.fc = nn.Linear(2, out)
        self.bn = nn.BatchNorm1d(out)


def test_strict_load_reports_missing_unexpected_and_mis_shaped_and_loads_nothing():
    model = Tiny()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    state = {
        "fc.weight": torch.zeros(4, 2),  # mis-shaped
        "bn.weight": torch.full((3,), 5.0),
        "bn.running_mean": torch.ones(3),
        "bn.running_var": torch.ones(3),
        "extra": torch.zeros(1),
    }  # fc.bias and bn.bias missing
    with pytest.raises(WeightsMismatchError) as err:
        load_strict(model, state, "w.pt", "Tiny", hint="see the README")
    assert str(err.value) == (
        "w.pt: does not match Tiny: 2 missing: fc.bias, bn.bias; 1 unexpected: extra; "
        "1 mis-shaped: fc.weight: checkpoint (4, 2) vs model (3, 2); see the README"
    )
    report = err.value.report
    assert report is not None and not report.ok
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # nothing loaded
    report = load_strict(model, state, "w.pt", "Tiny", strict=False)
    assert report.loaded == ["bn.running_mean", "bn.running_var", "bn.weight"]
    assert torch.equal(model.bn.weight, torch.full((3,), 5.0))
    assert torch.equal(model.fc.weight, before["fc.weight"])


def test_bn_counters_are_optional_both_ways_and_every_fit_loads():
    src, dst = Tiny(), Tiny()
    with torch.no_grad():
        for p in src.parameters():
            p.uniform_()
    state = {k: v for k, v in src.state_dict().items() if not k.endswith("num_batches_tracked")}
    report = load_strict(dst, state, "w.pt", "Tiny")
    assert report.ok and len(report.loaded) == 6
    assert all(torch.equal(dst.state_dict()[k], v) for k, v in state.items())
    assert report.describe() == "every tensor fits" and report.summary() == "6 tensors loaded"
    extra = {**state, "other.num_batches_tracked": torch.tensor(3)}
    assert load_strict(dst, extra, "w.pt", "Tiny").ok


def test_renaming_display_adapting_and_one_tensor_into_several():
    theirs = {"linear.weight": torch.ones(3, 2), "linear.bias": torch.ones(5)}
    shared = {"w": torch.ones(3, 2)}
    own = {"fc.weight": torch.zeros(3, 2), "fc.bias": torch.zeros(3), "copy.weight": torch.zeros(3, 2)}

    def to_model(k: str) -> str | list[str] | None:
        return ["fc.weight", "copy.weight"] if k == "w" else rename_by_prefix(k, [("linear.", "fc.")])

    def adapt(name: str, value: torch.Tensor, ours: torch.Tensor) -> tuple[torch.Tensor, str | None] | None:
        return (value[:3], f"{name}: {len(value)} -> 3") if value.shape != ours.shape else None

    picked, report = match_state_dict(own, theirs, to_model, to_file=lambda k: "theirs:" + k, adapt=adapt)
    assert sorted(picked) == ["fc.bias", "fc.weight"] and report.adapted == ["fc.bias: 5 -> 3"]
    assert report.missing == ["theirs:copy.weight"] and not report.unexpected
    picked, report = match_state_dict(own, {**shared, "fc.bias": torch.ones(3)}, to_model)
    assert report.ok and torch.equal(picked["copy.weight"], torch.ones(3, 2))
    _, report = match_state_dict(own, {"nowhere.w": torch.ones(1)}, to_model)
    assert report.unexpected == ["nowhere.w"]


# -- one error class for every caller --------------------------------------------------------------


def _hircnn(path: Path) -> Any:
    from maskahand.detector.hircnn import read_state_dict

    return read_state_dict(path)


def _hotspots(path: Path) -> Any:
    from maskahand.hotspots.checkpoint import load_checkpoint

    return load_checkpoint(path, num_verbs=2)


def _hotspots_predict(path: Path) -> Any:
    from maskahand.hotspots.predict import load_hotspots

    return load_hotspots(path)


def _imagenet(path: Path) -> Any:
    from maskahand.hotspots.backbone import DilatedResNet50, load_imagenet_weights

    with torch.device("meta"):
        backbone = DilatedResNet50()
    return load_imagenet_weights(backbone, path)


def _afformer_reference(path: Path) -> Any:
    from maskahand.afformer.checkpoint import read_state_dict

    return read_state_dict(path)


def _afformer_backbone(path: Path) -> Any:
    from maskahand.afformer.encoder import Encoder, load_backbone_weights

    with torch.device("meta"):
        encoder = Encoder()
    return load_backbone_weights(encoder, path)


def _vit(path: Path) -> Any:
    from maskahand.afformer.vit import ViTDetEncoder, ViTSpec
    from maskahand.afformer.vit_weights import load_vit_weights

    spec = ViTSpec(dim=32, depth=2, heads=2, window=4, global_blocks=(1,), img_size=64, pretrain_size=64)
    with torch.device("meta"):
        encoder = ViTDetEncoder(spec)
    return load_vit_weights(encoder, path)


def _afformer_predictor(path: Path) -> Any:
    from maskahand.evaluation.afformer_predictor import load_afformer

    return load_afformer(path)


def _finetune_init(path: Path) -> Any:
    from maskahand.finetune.task import load_init

    return load_init(nn.Linear(1, 1), str(path))


def _training_checkpoint(path: Path) -> Any:
    from maskahand.trainer.checkpoint import load_checkpoint

    return load_checkpoint(path)


READERS: dict[str, Callable[[Path], Any]] = {
    "detector.hircnn": _hircnn,
    "hotspots.checkpoint": _hotspots,
    "hotspots.predict": _hotspots_predict,
    "hotspots.backbone": _imagenet,
    "afformer.checkpoint": _afformer_reference,
    "afformer.encoder": _afformer_backbone,
    "afformer.vit_weights": _vit,
    "evaluation.afformer_predictor": _afformer_predictor,
    "finetune.task": _finetune_init,
    "trainer.checkpoint": _training_checkpoint,
}


@pytest.mark.parametrize("caller", sorted(READERS))
def test_every_caller_raises_the_one_error_naming_the_file(caller, tmp_path):
    bad = truncated_torch_file(tmp_path / f"{caller}.pth")
    with pytest.raises(WeightsFileError) as err:
        READERS[caller](bad)
    assert type(err.value) is WeightsFileError and str(bad) in str(err.value)
    with pytest.raises(WeightsFileError) as err:
        READERS[caller](tmp_path / "absent.pth")
    assert type(err.value) is WeightsFileError and "absent.pth" in str(err.value)


def _mismatch_hircnn(state: dict[str, torch.Tensor]) -> None:
    from maskahand.detector.hircnn import load_into

    load_into(Tiny(), state, "w.pth")


def _mismatch_hotspots(state: dict[str, torch.Tensor]) -> None:
    from maskahand.hotspots.checkpoint import load_state

    load_state(Tiny(), state, "w.pth")


def _mismatch_afformer(state: dict[str, torch.Tensor]) -> None:
    from maskahand.afformer.checkpoint import load_reference_checkpoint

    load_reference_checkpoint(Tiny(), state)


@pytest.mark.parametrize("load", [_mismatch_hircnn, _mismatch_hotspots, _mismatch_afformer])
def test_every_strict_loader_raises_the_one_mismatch_error(load):
    state = dict(Tiny().state_dict())
    state["fc.weight"] = torch.zeros(9, 2)
    with pytest.raises(
        WeightsMismatchError, match=r"fc\.weight: checkpoint \(9, 2\) vs model \(3, 2\)"
    ) as err:
        load(state)
    assert isinstance(err.value, WeightsFileError)  # one hierarchy: catching the file error catches it
    assert isinstance(err.value.report, LoadReport) and err.value.report.shape_mismatch


@pytest.mark.parametrize(
    "error", [WeightsFileError("w.pt: bad"), WeightsMismatchError("w.pt: does not match")]
)
def test_weights_errors_exit_1_with_the_message_alone(error, capsys):
    def handler(args: argparse.Namespace) -> int:
        raise error

    assert run_handler(handler, argparse.Namespace(), "maskahand x") == EXIT_FAILURE
    assert capsys.readouterr().err == f"maskahand x: {error}{os.linesep}"


def test_predictor_content_errors_are_the_one_class(tmp_path):
    from maskahand.evaluation.afformer_predictor import load_afformer

    torch.save({"decoder.x": torch.ones(1)}, tmp_path / "headless.pth")
    with pytest.raises(WeightsFileError, match=r"headless\.pth: no heatmap head"):
        load_afformer(tmp_path / "headless.pth")
    (tmp_path / "run").mkdir()
    with pytest.raises(WeightsFileError, match=r"run: a folder without checkpoints/step_\*\.pt"):
        load_afformer(tmp_path / "run")
