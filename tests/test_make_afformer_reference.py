"""tools/make_afformer_reference.py, the generator of tests/data/afformer_frozen_reference: the pieces that need
no checkout of the authors' code (its checks of ``--theirs``, the seed rule, what it stores, the inputs, the
stand-ins' math), and, where ``MASKAHAND_AFFORMER_CHECKOUT`` names a checkout of showlab/afformer, a whole
regeneration that must give the committed file byte for byte."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.tool_util import load_tool

ROOT = Path(__file__).resolve().parents[1]
TOOL = ROOT / "tools" / "make_afformer_reference.py"
DATA = ROOT / "tests" / "data" / "afformer_frozen_reference" / "reference.pt"
SHA = "addd2a66c52eca45902c340602b2ab3dcb8f7f3f"


@pytest.fixture(scope="module")
def tool():
    return load_tool("make_afformer_reference")


@pytest.fixture(scope="module")
def reference() -> dict:
    return torch.load(DATA, map_location="cpu", weights_only=True)


def fake_checkout(path: Path, files) -> Path:
    for name in files:
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text("")
    return path


def test_refuses_a_folder_that_is_not_an_afformer_checkout(tool, tmp_path, capsys):
    theirs = fake_checkout(tmp_path / "theirs", ["README.md", "afformer/__init__.py"])
    out = tmp_path / "out"
    assert tool.main(["--theirs", str(theirs), "--commit", SHA, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert str(theirs) in err and "not a checkout of showlab/afformer" in err
    assert "afformer/afformer.py" in err and "configs/opra/r50fpn.yaml" in err
    assert "afformer/__init__.py" not in err  # only what is missing
    assert not out.exists()
    with pytest.raises(tool.CheckoutError, match="not a folder"):
        tool.check_checkout(tmp_path / "nowhere")


def test_the_commit_comes_from_git_or_from_the_command_line(tool, tmp_path):
    theirs = fake_checkout(tmp_path / "theirs", tool.REQUIRED)
    assert tool.check_checkout(theirs) == theirs.resolve()
    with pytest.raises(tool.CheckoutError, match="not a git checkout; name its commit with --commit"):
        tool.authors_commit(theirs, None)
    with pytest.raises(tool.CheckoutError, match="40-hex-digit"):
        tool.authors_commit(theirs, "addd2a6")
    assert tool.authors_commit(theirs, SHA.upper()) == SHA
    git = ["git", "-C", str(theirs), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "their files"], check=True)
    head = subprocess.run(
        [*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert tool.authors_commit(theirs, None) == head
    assert tool.authors_commit(theirs, head) == head
    with pytest.raises(tool.CheckoutError, match=f"checked out at {head}, not at --commit {SHA}"):
        tool.authors_commit(theirs, SHA)


def test_seed_rule_and_inputs_give_the_committed_file(tool, reference):
    """Everything but the authors' outputs is the tool's own: it must give the committed values exactly."""
    stored = reference["state_dict"]
    own = {name: torch.empty(value.shape) for name, value in stored.items()}
    own.update({name: torch.empty(shape) for name, shape in reference["generated"].items()})
    for name in tool.OWN_BUFFERS:
        own[name] = stored[name].clone()
    weights, ours, generated = tool.reference_weights(own)
    assert set(ours) == set(stored) and generated == reference["generated"]
    for name, value in stored.items():
        assert ours[name].dtype == value.dtype and torch.equal(ours[name], value), name
        assert torch.equal(weights[name], value.float()), name  # the model runs with the stored values
    for name, total in reference["generated_sums"].items():
        # float64 sums of float32 tensors: equal up to the summation order (torch's thread count)
        assert float(weights[name].double().sum()) == pytest.approx(total, rel=1e-12, abs=1e-12), name
    inputs, targets = tool.make_inputs()
    assert list(inputs) == list(reference["inputs"]) and list(targets) == list(reference["targets"])
    for key in ("images", "frames"):
        assert torch.equal(inputs[key], reference["inputs"][key]), key
    assert inputs["num_frames"] == reference["inputs"]["num_frames"]
    assert targets["actions"] == reference["targets"]["actions"]
    for ours_map, theirs_map in zip(targets["heatmaps_u8"], reference["targets"]["heatmaps_u8"], strict=True):
        assert ours_map.dtype == torch.uint8 and torch.equal(ours_map, theirs_map)


def test_stand_ins_do_the_math_they_replace(tool):
    g = torch.Generator().manual_seed(0)
    # (batch, tokens, heads, channels): 3 query tokens, 5 key/value tokens
    q, k, v = (torch.randn(2, 5 if i else 3, 4, 8, generator=g) for i in range(3))
    bias = torch.randn(2, 4, 3, 5, generator=g)
    scores = torch.einsum("bqhc,bkhc->bhqk", q, k) / 8**0.5 + bias
    want = torch.einsum("bhqk,bkhc->bqhc", scores.softmax(-1), v)
    torch.testing.assert_close(tool._attention(q, k, v, attn_bias=bias), want, rtol=1e-5, atol=1e-6)
    norm = tool._get_norm("LN", 6)
    with torch.no_grad():
        norm.weight.normal_(generator=g)
        norm.bias.normal_(generator=g)
    x = torch.randn(2, 6, 3, 4, generator=g)
    want = torch.nn.functional.layer_norm(x.permute(0, 2, 3, 1), (6,), norm.weight, norm.bias, eps=1e-6)
    torch.testing.assert_close(norm(x), want.permute(0, 3, 1, 2), rtol=1e-5, atol=1e-6)
    with pytest.raises(NotImplementedError, match="R50 reference"):
        tool._stand_in_modules()["detectron2.model_zoo"]["get_config"]("common/models/mask_rcnn_vitdet.py")


@pytest.mark.slow
def test_regenerating_from_the_authors_checkout_gives_the_committed_file(tmp_path):
    theirs = os.environ.get("MASKAHAND_AFFORMER_CHECKOUT")
    if not theirs:
        pytest.skip("set MASKAHAND_AFFORMER_CHECKOUT to a checkout of showlab/afformer at " + SHA)
    cmd = [sys.executable, str(TOOL), "--theirs", theirs, "--out", str(tmp_path)]
    if not (Path(theirs) / ".git").exists():
        cmd += ["--commit", SHA]
    subprocess.run(cmd, check=True, env={**os.environ, "OMP_NUM_THREADS": "2"}, timeout=600)
    assert (tmp_path / "reference.pt").read_bytes() == DATA.read_bytes()
