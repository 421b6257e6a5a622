"""``maskahand synth preview``: a contact sheet of synthesized samples, in the spirit of the paper's figure 5.

Per sample: a strip of clip frames; then, per target, the chosen frame with its interacting hand boxes
(green) and mask boxes (blue), the target image, and the ground-truth heatmap over the target.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from ..shards.schema import MaskAHandSample


def _scaled(boxes: list[list[float]], source_size: list[int], size: int) -> list[list[float]]:
    sx, sy = size / source_size[0], size / source_size[1]
    return [[b[0] * sx, b[1] * sy, b[2] * sx, b[3] * sy] for b in boxes]


def sample_sheet(sample: MaskAHandSample, strip_frames: int = 8, cell_side: int = 160) -> Image.Image:
    """One sample's block of the contact sheet."""
    # deferred: cv2, numpy at import
    from ..shards import sheet

    t = sample.frames.shape[0]
    step = max(1, -(-t // strip_frames))
    strip = sheet.grid([sample.frames[i] for i in range(0, t, step)], cols=strip_frames, cell_side=cell_side)
    rows = [sheet.titled(strip, f"{sample.key}: mined clip ({t} frames, every {step})")]
    size = sample.frames.shape[-1]
    cells = []
    for k, prov in enumerate(sample.meta["targets"]):
        chosen = sample.frames[prov["frame"]]
        boxed = sheet.draw_boxes(chosen, _scaled(prov["mask_boxes"], prov["source_size"], size))
        boxed = sheet.draw_boxes(
            boxed, _scaled(prov["hand_boxes"], prov["source_size"], size), color=(40, 200, 60)
        )
        cells += [boxed, sample.targets[k], sheet.heatmap_overlay(sample.targets[k], sample.heatmaps[k])]
    label = "per target: chosen frame (hands green, masks blue) | target image | GT heatmap"
    rows.append(sheet.titled(sheet.grid(cells, cols=6, cell_side=cell_side), label))
    return sheet.stack(rows)


def write_preview(shards: str | Path, out: str | Path, samples: int = 4, strip_frames: int = 8) -> Path:
    """Contact sheet of the first ``samples`` samples of the maskahand shards under ``shards``."""
    # deferred: cv2, numpy, torchvision, webdataset at import
    from ..shards import sheet
    from ..shards.reader import maskahand_dataset

    blocks = []
    for sample in maskahand_dataset(shards, split_by_node=False, split_by_worker=False, on_error="raise"):
        blocks.append(sample_sheet(sample, strip_frames))
        if len(blocks) >= samples:
            break
    if not blocks:
        raise ValueError(f"{shards}: no maskahand samples to preview")
    return sheet.save_image(sheet.stack(blocks, pad=12), out)
