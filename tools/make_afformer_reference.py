"""Regenerate ``tests/data/afformer_frozen_reference/reference.pt``: what the AUTHORS' code gives for the R50-FPN
Afformer (``configs/opra/r50fpn.yaml``) with seeded weights (see that folder's NOTE.md). Never computed with
this project's model.

    python tools/make_afformer_reference.py --theirs DIR [--commit SHA] [--out tests/data/afformer_frozen_reference]
    make afformer-reference THEIRS=DIR

``DIR`` is a checkout of showlab/afformer (``git clone https://github.com/showlab/afformer``): the tool
imports its ``afformer`` package from there at run time; nothing of their code is in this file. What the
R50 model imports but does not use or that does not install here (xformers, timm, detectron2) is replaced,
only where the real package is missing, by the stand-ins below, which do the same math:
``xformers.ops.memory_efficient_attention`` = torch SDPA with the same additive bias and default scale;
timm's ``Mlp`` (fc1, GELU, fc2), ``trunc_normal_`` and ``DropPath``; detectron2's channels-first
``LayerNorm`` (``get_norm("LN")``, eps 1e-6). detectron2's ViTDet pieces are unused by the R50 model: their
stand-ins refuse to run. ``--commit`` names the authors' commit when ``DIR`` is not a git checkout.

The seed rule (``seed_tensor``), what the file stores (``is_stored``) and the inputs (``make_inputs``) live
here; ``tests/test_afformer_frozen_reference.py`` regenerates the tensors the file does not store with
``seed_tensor``. Regenerate only when the authors' code changes; the file is byte-identical when it does not.
"""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys
import types
import warnings
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests" / "data" / "afformer_frozen_reference"
AUTHORS_COMMIT = "addd2a66c52eca45902c340602b2ab3dcb8f7f3f"  # the commit the committed file was made from
# what a checkout must hold: the package and the configuration this reference follows
REQUIRED = (
    "afformer/__init__.py",
    "afformer/afformer.py",
    "afformer/encoder.py",
    "afformer/decoder.py",
    "afformer/attention.py",
    "afformer/predictor.py",
    "configs/opra/r50fpn.yaml",
)
# configs/opra/r50fpn.yaml's network (max_kv_thw[0] = its clip_length_in_frames, 32)
ENCODER = {
    "detector": "fasterrcnn_resnet50_fpn_v2",
    "weights": None,
    "image_scales": ["p4", "p3", "p2"],
    "video_scale": "p3",
}
DECODER = {"hidden_channels": 256, "drop_path": 0.0, "max_q_thw": [1, 64, 64], "max_kv_thw": [32, 32, 32]}
PREDICTOR = {"hidden_channels": 256, "out_channels": 7, "classify_action": True}
IMAGE_SIZE = 64
FRAMES = [16, 5]  # two clips of different lengths, concatenated (the authors' batch layout)
ACTIONS = [[1, 4], [2]]  # multi-label targets, one heatmap per (sample, action)
INPUT_SEED = 2024
THREADS = 2  # the committed file was made with OMP_NUM_THREADS=2


class CheckoutError(ValueError):
    """``--theirs`` is not a usable checkout of showlab/afformer (the message names the path and why)."""


def check_checkout(theirs: Path) -> Path:
    """``theirs`` resolved, or :class:`CheckoutError` naming the files it lacks."""
    path = Path(theirs).expanduser().resolve()
    if not path.is_dir():
        raise CheckoutError(f"{path}: not a folder (expected a checkout of showlab/afformer)")
    missing = [name for name in REQUIRED if not (path / name).is_file()]
    if missing:
        raise CheckoutError(
            f"{path}: not a checkout of showlab/afformer, missing {', '.join(missing)} "
            "(git clone https://github.com/showlab/afformer)"
        )
    return path


def authors_commit(theirs: Path, given: str | None) -> str:
    """The checkout's commit: ``given`` (``--commit``) or its git HEAD; they must agree when both exist."""
    head = None
    if (theirs / ".git").exists():
        run = subprocess.run(
            ["git", "-C", str(theirs), "rev-parse", "HEAD"], capture_output=True, text=True, check=False
        )
        head = run.stdout.strip() if run.returncode == 0 else None
    if given is not None:
        given = given.strip().lower()
        if len(given) != 40 or any(c not in "0123456789abcdef" for c in given):
            raise CheckoutError(f"--commit {given!r}: expected the full 40-hex-digit commit id")
        if head is not None and head != given:
            raise CheckoutError(f"{theirs}: checked out at {head}, not at --commit {given}")
        return given
    if head is None:
        raise CheckoutError(f"{theirs}: not a git checkout; name its commit with --commit SHA")
    return head


def seed_tensor(name: str, shape: list[int] | tuple[int, ...]) -> torch.Tensor:
    """The seed rule: numpy's legacy RandomState (frozen streams) seeded with crc32 of the authors' name,
    float64 drawn, float32 returned."""
    rs = np.random.RandomState(zlib.crc32(name.encode()))
    shape = tuple(int(s) for s in shape)
    n = int(np.prod(shape))
    if name.endswith("running_var"):
        a = 0.5 + rs.rand(*shape)
    elif name.endswith("running_mean"):
        a = 0.1 * rs.randn(*shape)
    elif ".rel_pos_" in name:
        a = 0.3 * rs.randn(*shape)  # non-zero relative-position tables, as in a trained model
    elif ".image_level_embeds." in name:
        a = 0.5 * rs.randn(*shape)
    elif name.endswith(".weight") and n == shape[0]:
        a = 1.0 + 0.1 * rs.randn(*shape)  # norms
    elif name.endswith(".bias"):
        a = 0.1 * rs.randn(*shape)
    else:
        a = rs.randn(*shape) / np.sqrt(n / shape[0])
    return torch.from_numpy(np.asarray(a, dtype=np.float32).reshape(shape))


OWN_BUFFERS = ("encoder.image_mean", "encoder.image_std")  # keep the model's values (ImageNet mean/std)
UNSTORED_DECODER = (
    "decoder.self2d_cross3d_block.mlp.fc1.weight",
    "decoder.self2d_cross3d_block.mlp.fc2.weight",
)


def is_stored(name: str) -> bool:
    """Stored in the file (float16): the decoder and predictor, less the MLP's two large matrices; the
    rest (the ResNet-50 + FPN and those two) the test regenerates by the seed rule."""
    return name.startswith(("decoder.", "predictor.")) and name not in UNSTORED_DECODER


def reference_weights(
    own: dict[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, list[int]]]:
    """From the authors' model's own state dict: (the float32 weights the model runs with, the stored
    tensors, the generated names -> shapes). Stored tensors are rounded to float16 and the model runs with
    exactly those values."""
    weights: dict[str, torch.Tensor] = {}
    stored: dict[str, torch.Tensor] = {}
    generated: dict[str, list[int]] = {}
    for name, value in own.items():
        if name in OWN_BUFFERS:
            weights[name] = value.detach().clone().float()
        elif is_stored(name):
            stored[name] = seed_tensor(name, value.shape).half()
            weights[name] = stored[name].float()
        else:
            weights[name] = seed_tensor(name, value.shape)
            generated[name] = list(value.shape)
    for name in OWN_BUFFERS:
        stored[name] = weights[name]
    return weights, stored, generated


def make_inputs() -> tuple[dict[str, Any], dict[str, Any]]:
    """(inputs, targets): uint8 images and concatenated clips; multi-label actions, a uint8 heatmap for each."""
    g = torch.Generator().manual_seed(INPUT_SEED)
    size = IMAGE_SIZE
    images = torch.randint(0, 256, (len(FRAMES), 3, size, size), generator=g, dtype=torch.uint8)
    frames = torch.randint(0, 256, (sum(FRAMES), 3, size, size), generator=g, dtype=torch.uint8)
    heatmaps = []
    for actions in ACTIONS:  # per sample: uniform values, then about half the pixels set to 0
        values = torch.randint(0, 256, (len(actions), size, size), generator=g, dtype=torch.uint8)
        heatmaps.append(values * (torch.rand(values.shape, generator=g) > 0.5))
    inputs = {"images": images, "frames": frames, "num_frames": list(FRAMES)}
    return inputs, {"actions": [list(a) for a in ACTIONS], "heatmaps_u8": heatmaps}


# -- stand-ins, used only where the real package does not import (same math; see the module docstring) --


def _attention(q, k, v, attn_bias=None, p=0.0, scale=None):
    """xformers.ops.memory_efficient_attention on (batch, tokens, heads, channels) tensors."""
    q, k, v = (t.transpose(1, 2) for t in (q, k, v))
    out = torch.nn.functional.scaled_dot_product_attention(
        q, k, v, attn_mask=attn_bias, dropout_p=p, scale=scale
    )
    return out.transpose(1, 2)


class _Mlp(torch.nn.Module):
    def __init__(
        self, in_features, hidden_features=None, out_features=None, act_layer=torch.nn.GELU, drop=0.0
    ):
        super().__init__()
        self.fc1 = torch.nn.Linear(in_features, hidden_features or in_features)
        self.act = act_layer()
        self.fc2 = torch.nn.Linear(hidden_features or in_features, out_features or in_features)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class _DropPath(torch.nn.Module):
    def __init__(self, drop_prob=0.0):
        super().__init__()
        if drop_prob:
            raise NotImplementedError("stand-in DropPath: the reference runs with drop_path 0")

    def forward(self, x):
        return x


class _ChannelsFirstLayerNorm(torch.nn.Module):
    """detectron2.layers.LayerNorm: normalises dim 1 of (N, C, H, W)."""

    def __init__(self, normalized_shape, eps=1e-6):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(normalized_shape))
        self.bias = torch.nn.Parameter(torch.zeros(normalized_shape))
        self.eps = eps

    def forward(self, x):
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        x = (x - u) / torch.sqrt(s + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


def _get_norm(norm, out_channels):
    if norm != "LN":
        raise NotImplementedError(f"stand-in get_norm: only 'LN', not {norm!r}")
    return _ChannelsFirstLayerNorm(out_channels)


def _unused(name: str):
    def refuse(*args, **kwargs):
        raise NotImplementedError(f"stand-in {name}: the ViTDet encoder is not part of the R50 reference")

    return refuse


def _stand_in_modules() -> dict[str, dict[str, Any]]:
    """module name -> attributes, for each package the authors' ``afformer`` imports."""
    return {
        "xformers": {},
        "xformers.ops": {"memory_efficient_attention": _attention},
        "timm": {},
        "timm.models": {},
        "timm.models.layers": {
            "trunc_normal_": torch.nn.init.trunc_normal_,
            "Mlp": _Mlp,
            "DropPath": _DropPath,
        },
        "detectron2": {},
        "detectron2.layers": {"get_norm": _get_norm, "LayerNorm": _ChannelsFirstLayerNorm},
        "detectron2.model_zoo": {"get_config": _unused("detectron2.model_zoo.get_config")},
        "detectron2.config": {"instantiate": _unused("detectron2.config.instantiate")},
        "detectron2.checkpoint": {
            "DetectionCheckpointer": _unused("detectron2.checkpoint.DetectionCheckpointer")
        },
        "detectron2.modeling": {},
        "detectron2.modeling.backbone": {},
        "detectron2.modeling.backbone.utils": {
            "get_abs_pos": _unused("detectron2.modeling.backbone.utils.get_abs_pos"),
            "get_rel_pos": _unused("detectron2.modeling.backbone.utils.get_rel_pos"),
        },
    }


def install_stand_ins() -> list[str]:
    """Put a stand-in into ``sys.modules`` for each top-level package that does not import; returns their
    names."""
    specs = _stand_in_modules()
    used = []
    for top in sorted({name.split(".")[0] for name in specs}):
        try:
            importlib.import_module(top)
            continue
        except ImportError:
            used.append(top)
        for name, attributes in specs.items():
            if name.split(".")[0] != top:
                continue
            module = types.ModuleType(name, f"stand-in for {name} (tools/make_afformer_reference.py)")
            module.__dict__.update(attributes)
            sys.modules[name] = module
            parent, _, child = name.rpartition(".")
            if parent:
                setattr(sys.modules[parent], child, module)
    return used


def import_theirs(theirs: Path) -> types.ModuleType:
    """The authors' ``afformer`` package from ``theirs`` (never another module of that name)."""
    for name in [n for n in sys.modules if n == "afformer" or n.startswith("afformer.")]:
        del sys.modules[name]
    sys.path.insert(0, str(theirs))
    try:
        package = importlib.import_module("afformer")
    finally:
        sys.path.remove(str(theirs))
    where = Path(package.__file__ or "").resolve()
    if theirs not in where.parents:
        raise CheckoutError(f"{theirs}: `import afformer` found {where} instead")
    return package


def build_theirs(theirs: Path) -> torch.nn.Module:
    """The authors' Afformer(FasterRCNNFeaturePyramid, FinegrainedDecoder, Predictor) of r50fpn.yaml."""
    package = import_theirs(theirs)
    encoder = package.FasterRCNNFeaturePyramid(**ENCODER)
    decoder = package.FinegrainedDecoder(**DECODER)
    predictor = package.Predictor(**PREDICTOR)
    return package.Afformer(encoder, decoder, predictor)


@torch.no_grad()
def run_theirs(net: torch.nn.Module, inputs: dict[str, Any], targets: dict[str, Any]) -> dict[str, Any]:
    """Heatmap/action logits of predictor(decoder(encoder)), eval-mode action probabilities of their
    forward, and the three losses of its training mode."""
    images, frames, counts = inputs["images"], inputs["frames"], inputs["num_frames"]
    net.eval()
    heatmaps, actions = net.predictor(net.decoder(*net.encoder(images, frames), counts))
    _, probabilities = net((images, frames, counts))
    net.train()
    gt_heatmaps = [h.float() / 255.0 for h in targets["heatmaps_u8"]]
    gt_actions = [torch.tensor(a) for a in targets["actions"]]
    losses = net((images, frames, counts, gt_heatmaps, gt_actions))
    net.eval()
    return {
        "heatmap_logits": heatmaps.contiguous(),
        "action_logits": actions.contiguous(),
        "action_probabilities": probabilities.contiguous(),
        "loss": float(losses["loss"]),
        "loss_heatmap": float(losses["loss_heatmap"]),
        "loss_action": float(losses["loss_action"]),
    }


def make_reference(theirs: Path, commit: str | None = None) -> dict[str, Any]:
    """The whole ``reference.pt`` content, from the authors' code at ``theirs``."""
    theirs = check_checkout(theirs)
    commit = authors_commit(theirs, commit)
    stand_ins = install_stand_ins()
    if stand_ins:
        print(f"stand-ins (not installed here): {', '.join(stand_ins)}", flush=True)
    with warnings.catch_warnings():  # torchvision: trainable_backbone_layers without weights (all trainable)
        warnings.filterwarnings("ignore", message="Changing trainable_backbone_layers has no effect")
        net = build_theirs(theirs)
    weights, stored, generated = reference_weights(net.state_dict())
    net.load_state_dict(weights, strict=True)
    inputs, targets = make_inputs()
    return {
        "state_dict": stored,
        "generated": generated,
        "generated_sums": {name: float(weights[name].double().sum()) for name in generated},
        "inputs": inputs,
        "targets": targets,
        "outputs": run_theirs(net, inputs, targets),
        "authors_commit": commit,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--theirs", type=Path, required=True, help="a checkout of showlab/afformer")
    ap.add_argument("--commit", help="the checkout's commit, when it is not a git checkout")
    ap.add_argument("--out", type=Path, default=OUT, help=f"folder for reference.pt (default {OUT})")
    ap.add_argument("--threads", type=int, default=THREADS, help=f"torch CPU threads (default {THREADS})")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        reference = make_reference(args.theirs, args.commit)
    except CheckoutError as error:
        print(f"make_afformer_reference: {error}", file=sys.stderr)
        return 2
    if reference["authors_commit"] != AUTHORS_COMMIT:
        print(
            f"note: the committed file was made from {AUTHORS_COMMIT}, this from {reference['authors_commit']}"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "reference.pt"
    tmp = args.out / "reference.pt.partial"
    torch.save(reference, tmp)
    tmp.replace(path)
    print(
        f"wrote {path}: {len(reference['state_dict'])} stored tensors, {len(reference['generated'])} by the seed rule"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
