"""Regenerate ``tests/data/afformer_vitdet_reference/reference.pt``: what the AUTHORS' code gives for the
ViTDet Afformer with seeded weights (see that folder's NOTE.md). Never computed with this project's model.

    python tools/make_vitdet_reference.py --theirs DIR [--out tests/data/afformer_vitdet_reference]

``DIR`` is a folder from which ``import afformer`` gives showlab/afformer's ``afformer`` package and
``import detectron2.modeling.backbone.vit`` gives detectron2's ViT (a checkout of their repository with
detectron2, xformers and timm installed, or with stand-ins of the same math for what cannot install:
``detectron2.model_zoo.get_config`` must honour a module-level ``VIT_KWARGS`` dict, the ViT's constructor
arguments). Nothing of their code is in this file.

The seed rule and the reduced ViT configuration live here (``seed_tensor``, ``SMALL``) and are read by
``tests/test_afformer_vitdet_reference.py``, so the test regenerates the same weights.
"""

from __future__ import annotations

import argparse
import sys
import zlib
from functools import partial
from pathlib import Path

import numpy as np
import torch

# The reduced ViTDet used for the stored reference: ViT-B's structure (window and global blocks, decomposed
# relative positions, a class-token absolute table resized to the input), at a width and depth that keep
# the file small. 96 x 96 inputs -> 6 x 6 tokens: windows of 4 are zero-padded to 8 x 8, the global
# blocks' 7-row tables (img_size 64 / 16 = 4) are resized to 11 rows, the 2 x 2 absolute table to 6 x 6.
SMALL = {
    "dim": 128,
    "depth": 4,
    "heads": 2,
    "window": 4,
    "global_blocks": [1, 3],
    "img_size": 64,
    "pretrain_size": 32,
    "trainable": 2,
    "image_size": 96,
    "frames": [16, 5],
    "num_classes": 7,
}


def seed_tensor(name: str, shape: list[int] | tuple[int, ...]) -> torch.Tensor:
    """The seed rule: numpy's legacy RandomState (frozen streams) seeded with crc32 of the authors' name."""
    rs = np.random.RandomState(zlib.crc32(name.encode()))
    shape = tuple(int(s) for s in shape)
    n = int(np.prod(shape))
    if ".rel_pos_" in name:
        a = 0.3 * rs.randn(*shape)  # non-zero relative-position tables, as in a trained model
    elif name.endswith("pos_embed"):
        a = 0.5 * rs.randn(*shape)
    elif name.endswith(".weight") and n == shape[0]:
        a = 1.0 + 0.1 * rs.randn(*shape)  # norms
    elif name.endswith(".bias"):
        a = 0.1 * rs.randn(*shape)
    else:
        a = rs.randn(*shape) / np.sqrt(n / shape[0])
    return torch.from_numpy(np.asarray(a, dtype=np.float32).reshape(shape))


def seeded_state(shapes: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    return {name: seed_tensor(name, shape) for name, shape in shapes.items()}


def make_inputs(cfg: dict = SMALL) -> dict:
    g = torch.Generator().manual_seed(2024)
    size, frames = cfg["image_size"], cfg["frames"]
    images = torch.randint(0, 256, (len(frames), 3, size, size), generator=g, dtype=torch.uint8)
    video = torch.randint(0, 256, (sum(frames), 3, size, size), generator=g, dtype=torch.uint8)
    out = size // 4  # heatmaps: 4x the stride-16 grid
    actions = [[1, 4], [2]][: len(frames)]
    heatmaps = [torch.randint(0, 256, (len(a), out, out), generator=g, dtype=torch.uint8) for a in actions]
    return {
        "images": images,
        "frames": video,
        "num_frames": list(frames),
        "actions": actions,
        "heatmaps_u8": heatmaps,
    }


def build_theirs(theirs: Path, cfg: dict = SMALL, t_max: int | None = None):
    """The authors' Afformer(ViTDetSimplePyramid, SimpleDecoder, Predictor) at ``cfg``'s size."""
    sys.path.insert(0, str(theirs))
    import detectron2.model_zoo as zoo  # their (or stand-in) detectron2
    from torch import nn

    from afformer import Afformer, Predictor, SimpleDecoder, ViTDetSimplePyramid

    zoo.VIT_KWARGS = dict(  # type: ignore[attr-defined]
        img_size=cfg["img_size"],
        patch_size=16,
        embed_dim=cfg["dim"],
        depth=cfg["depth"],
        num_heads=cfg["heads"],
        drop_path_rate=0.0,  # the loss is compared in training mode: no stochastic depth
        window_size=cfg["window"],
        mlp_ratio=4,
        qkv_bias=True,
        norm_layer=partial(nn.LayerNorm, eps=1e-6),
        window_block_indexes=[i for i in range(cfg["depth"]) if i not in cfg["global_blocks"]],
        residual_block_indexes=[],
        use_rel_pos=True,
        out_feature="last_feat",
        pretrain_img_size=cfg["pretrain_size"],
    )
    side = cfg["image_size"] // 16
    t_max = t_max or max(cfg["frames"])
    encoder = ViTDetSimplePyramid(weights=None, trainable=cfg["trainable"])
    decoder = SimpleDecoder(
        cfg["dim"], drop_path=0.0, q_thw=[1, side, side], kv_thw=[t_max, -(-side // 2), -(-side // 2)]
    )
    predictor = Predictor(cfg["dim"], cfg["num_classes"], classify_action=True)
    return Afformer(encoder, decoder, predictor)


@torch.no_grad()
def run_theirs(net, inputs: dict) -> dict[str, torch.Tensor]:
    """Encoder features, decoder output, heatmap/action logits, probabilities, and the training loss."""
    net.eval()
    images, video, counts = inputs["images"], inputs["frames"], inputs["num_frames"]
    image_feats, frame_feats = net.encoder(images, video)
    decoded = net.decoder(image_feats, frame_feats, counts)
    heat, act = net.predictor(decoded)
    probs_heat, probs_act = net((images, video, counts))
    net.train()
    gt_heat = [h.float() / 255.0 for h in inputs["heatmaps_u8"]]
    gt_act = [torch.tensor(a) for a in inputs["actions"]]
    losses = net((images, video, counts, gt_heat, gt_act))
    net.eval()
    return {
        "image_features": image_feats,
        "frame_features": frame_feats,
        "decoder_output": decoded,
        "heatmap_logits": heat,
        "action_logits": act,
        "heatmap_probabilities": probs_heat,
        "action_probabilities": probs_act,
        "loss": losses["loss"].reshape(()),
        "loss_heatmap": losses["loss_heatmap"].reshape(()),
        "loss_action": losses["loss_action"].reshape(()),
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--theirs", type=Path, required=True, help="folder with the authors' afformer package")
    ap.add_argument("--out", type=Path, default=Path("tests/data/afformer_vitdet_reference"))
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    net = build_theirs(args.theirs)
    shapes = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    state = seeded_state(shapes)
    net.load_state_dict(state, strict=True)
    inputs = make_inputs()
    outputs = run_theirs(net, inputs)
    ref = {
        "config": dict(SMALL),
        "shapes": {k: list(v) for k, v in shapes.items()},
        "sums": {k: float(v.double().sum()) for k, v in state.items()},
        "inputs": inputs,
        "outputs": {k: v.contiguous() for k, v in outputs.items()},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    torch.save(ref, args.out / "reference.pt")
    print(
        f"wrote {args.out / 'reference.pt'}: {len(shapes)} tensors by the seed rule, outputs {sorted(outputs)}"
    )


if __name__ == "__main__":
    main()
