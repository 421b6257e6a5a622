"""Interaction Hotspots as an evaluation predictor (``maskahand eval --model hotspots``).

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
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from maskahand.config import HotspotsConfig
from maskahand.evaluation.predictor import Prediction
from maskahand.hotspots.checkpoint import extract_state, load_file, load_state
from maskahand.hotspots.intcam import intcam
from maskahand.hotspots.model import HotspotsModel, uninitialised_model
from maskahand.runtime.weights import WeightsFileError

log = logging.getLogger(__name__)
EVAL_MAX_LEN = 32  # their evaluation datasets: max_len -1 -> 32


def load_hotspots(checkpoint: str | Path, base: HotspotsConfig | None = None) -> HotspotsModel:
    """The model (eval mode, CPU) from any checkpoint form above."""
    from maskahand.configbase import from_dict
    from maskahand.runtime.checkpoint_files import FORMAT

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
            from maskahand.video.sampling import resize_uint8

            size = self.model.cfg.image_size
            img = resize_uint8(image, size, size).unsqueeze(0).to(self.device)
            self._maps[key] = intcam(self.model, img)[0].float().cpu()
        return self._maps[key]

    @torch.no_grad()
    def action_scores(self, clips: list[torch.Tensor]) -> torch.Tensor | None:
        if not self.actions or not clips:
            return None
        from maskahand.video.sampling import resize_uint8

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
