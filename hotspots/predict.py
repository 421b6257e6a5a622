"""Interaction Hotspots predictions: the evaluation predictor (``maskahand eval --model hotspots``) and
the maps of image files (``maskahand hotspots predict``: :func:`predict_images`).

Checkpoints: a training checkpoint of ``maskahand hotspots train`` (``RUN/checkpoints/step_*.pt``, the model
config inside), its export ``RUN/hotspots_model.pth``, or the authors' ``ckpt_E_20.pth`` (``{"net": ...}``;
the number of verbs is read off the classifier). Heatmaps: IntCAM on the target image resized to
``model.image_size`` (224, as their evaluation), one map per verb (28 x 28). The video is not needed for
the maps (the model anticipates from the image alone); its clips give the action scores: the LSTM over each
clip (the middle ``32`` frames at most), softmax, summed over clips. Maps are cached per image content,
since many entries share one image.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from ..core.config import HotspotsConfig
from ..core.configbase import from_dict
from ..evaluation.predictor import Prediction
from ..runtime.atomic import save_torch_atomic
from ..runtime.checkpoint_files import FORMAT
from ..runtime.distributed import resolve_device
from ..runtime.weights import WeightsFileError
from ..video.sampling import resize_uint8
from .checkpoint import extract_state, load_file, load_state
from .intcam import intcam
from .model import HotspotsModel, uninitialised_model

log = logging.getLogger(__name__)
EVAL_MAX_LEN = 32  # their evaluation datasets: max_len -1 -> 32


def load_hotspots(checkpoint: str | Path, base: HotspotsConfig | None = None) -> HotspotsModel:
    """The model (eval mode, CPU) from any checkpoint form above."""

    raw = load_file(checkpoint)
    if isinstance(raw, dict) and raw.get("format") == FORMAT:
        model_cfg = (raw.get("config") or {}).get("model")
        if not isinstance(model_cfg, dict):
            raise WeightsFileError(f"{checkpoint}: training checkpoint without a model config")
        cfg, state = from_dict(HotspotsConfig, model_cfg, "model."), raw["model"]
    else:
        state = extract_state(raw, str(checkpoint))
        fc = state.get("fc.weight", state.get("classifier.weight"))
        if fc is None:
            raise WeightsFileError(f"{checkpoint}: no classifier (fc.weight) in this state dict")
        cfg = base or HotspotsConfig()
        if isinstance(raw, dict) and isinstance(raw.get("config"), dict):  # our export of a run
            cfg = from_dict(HotspotsConfig, raw["config"], "model.")
        cfg = replace(cfg, num_verbs=int(fc.shape[0]))
    model = uninitialised_model(replace(cfg, backbone_weights=None))
    load_state(model, state, where=str(checkpoint))
    return model.eval()


class HotspotsPredictor:
    needs_media = True

    def __init__(
        self, model: HotspotsModel, device: torch.device, name: str = "hotspots", actions: bool = True
    ):
        self.model = model.to(device).eval()
        self.device = device
        self.name = name
        self.actions = actions
        self._maps: dict[str, torch.Tensor] = {}

    def heatmaps(self, image: torch.Tensor) -> torch.Tensor:
        key = hashlib.sha1(image.contiguous().numpy().tobytes()).hexdigest()
        if key not in self._maps:
            size = self.model.cfg.image_size
            img = resize_uint8(image, size, size).unsqueeze(0).to(self.device)
            self._maps[key] = intcam(self.model, img)[0].float().cpu()
        return self._maps[key]

    @torch.no_grad()
    def action_scores(self, clips: list[torch.Tensor]) -> torch.Tensor | None:
        if not self.actions or not clips:
            return None

        size = self.model.cfg.image_size
        total = None
        for clip in clips:
            n = len(clip)
            if n > EVAL_MAX_LEN:  # their evaluation window: the middle frames
                a = n // 2 - EVAL_MAX_LEN // 2
                clip = clip[a : a + EVAL_MAX_LEN]
            frames = resize_uint8(clip, size, size).unsqueeze(0).to(self.device)
            p = self.model(frames).logits.softmax(-1)[0].float().cpu()
            total = p if total is None else total + p
        return total

    def __call__(self, clips: list[torch.Tensor], image: torch.Tensor | None) -> Prediction:
        if image is None:
            raise ValueError("Hotspots needs the target image")
        return Prediction(heatmaps=self.heatmaps(image), actions=self.action_scores(clips))


def build_predictor(checkpoint: str, recipe: Any, device: torch.device) -> HotspotsPredictor:
    model = load_hotspots(checkpoint)
    log.info("Hotspots from %s (%d verbs)", checkpoint, model.cfg.num_verbs)
    return HotspotsPredictor(model, device, name=f"hotspots:{Path(checkpoint).name}")


# --- `maskahand hotspots predict`: maps of image files, saved with overlays --------------------------------


def image_files(paths: Sequence[str]) -> list[Path]:
    """The images a command line names: files as given, a folder's .jpg/.jpeg/.png sorted by name."""
    files: list[Path] = []
    for a in paths:
        p = Path(a)
        files += (
            sorted(f for f in p.iterdir() if f.suffix.lower() in (".jpg", ".jpeg", ".png"))
            if p.is_dir()
            else [p]
        )
    return files


def predict_images(
    files: list[Path], images: list[torch.Tensor], checkpoint: str | Path, out: Path, device: str = "auto"
) -> Path:
    """Write ``out/hotspots.pt`` ({images, num_verbs, maps (N, verbs, h, w)}) and one overlay PNG per
    (image, verb) (``<stem>.verb<v>.png``); ``images`` are the uint8 (3, H, W) files. Returns the .pt path."""
    # deferred: PIL, cv2 at import
    from ..shards.sheet import heatmap_overlay, save_image

    model = load_hotspots(checkpoint)
    predictor = HotspotsPredictor(model, resolve_device(device), actions=False)
    out.mkdir(parents=True, exist_ok=True)
    maps = []
    for f, img in zip(files, images):
        m = predictor.heatmaps(img)  # (verbs, h, w)
        maps.append(m)
        size = model.cfg.image_size
        shown = resize_uint8(img, size, size)
        for v in range(m.shape[0]):
            up = torch.nn.functional.interpolate(m[v][None, None], size=(size, size), mode="bilinear")[0, 0]
            up = (up - up.min()) / (up.max() - up.min() + 1e-12)
            save_image(heatmap_overlay(shown, up), out / f"{f.stem}.verb{v}.png")

    save_torch_atomic(
        {"images": [str(f) for f in files], "num_verbs": model.cfg.num_verbs, "maps": torch.stack(maps)},
        out / "hotspots.pt",
    )
    log.info("wrote %s and %d overlays", out / "hotspots.pt", len(files) * model.cfg.num_verbs)
    return out / "hotspots.pt"
