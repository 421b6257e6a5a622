"""Baselines that need no images: Center Bias (the Interaction Hotspots ``gaussian`` baseline) and uniform.

Center Bias, as their ``Baselines.gaussian`` builds it: a 225 x 225 map with a single 1 at its centre,
convolved (zero padding 55) with a 112 x 112 Gaussian of FWHM 56 centred at (56, 56). The result is
224 x 224: a Gaussian of FWHM 56 centred at pixel (111, 111), nonzero only on the 112 x 112 square
[56, 167]^2 (the kernel's extent) and exactly zero outside. We write that map in closed form.

The zeros matter: under the 28 x 28 rule, ground-truth mass outside the square meets a prediction of 0
(+1e-12), which is what drives Center Bias's KLD to ~11 in the Hotspots/Afformer tables. Under the 256
rule the authors take log(prediction) unguarded, so a zero would give an infinite KLD; there a baseline's
map gets the Hotspots eps (1e-12 after normalising to sum 1) -- the only change, applied to baselines only.
"""

from __future__ import annotations

import math

import torch

from .predictor import Prediction

CENTER_BIAS_SIZE = 224
EPS_256 = 1e-12


def center_bias_map() -> torch.Tensor:
    """(224, 224) float64: exp(-4 ln2 ((i-111)^2 + (j-111)^2) / 56^2) on [56, 167]^2, 0 elsewhere."""
    fwhm, centre, lo, hi = 56, 111, 56, 167
    i = torch.arange(CENTER_BIAS_SIZE, dtype=torch.float64)
    g = torch.exp(-4 * math.log(2) * (i - centre) ** 2 / fwhm**2)
    g = torch.where((i >= lo) & (i <= hi), g, torch.zeros_like(g))
    return g[:, None] * g[None, :]


class MapBaseline:
    """A fixed map for every entry and action (action-agnostic, C = 1), no media needed."""

    needs_media = False
    constant = True  # the same maps for every entry: the evaluator derives them once
    floor_256 = EPS_256  # added after normalising, in the 256 rule only (see the module docstring)

    def __init__(self, name: str, heatmap: torch.Tensor):
        self.name = name
        self.map = heatmap

    def __call__(self, clips: list[torch.Tensor], image: torch.Tensor | None) -> Prediction:
        return Prediction(heatmaps=self.map[None])


BASELINES = {
    "center-bias": lambda: MapBaseline("center-bias", center_bias_map()),
    "uniform": lambda: MapBaseline(
        "uniform", torch.ones(CENTER_BIAS_SIZE, CENTER_BIAS_SIZE, dtype=torch.float64)
    ),
}


def build_baseline(name: str) -> MapBaseline:
    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}; known: {', '.join(sorted(BASELINES))}")
    return BASELINES[name]()
