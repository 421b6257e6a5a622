"""The two published metric protocols, as plain tensor functions.

**256 x 256 (Afformer, table 1)** -- the authors' OPRA evaluation: per entry one ground-truth map per
distinct action (its points set to 1 on a zero map, +1e-10, Gaussian blur with kernel sqrt(h*w)/3 made
odd); predictions are probability maps (the model's softmax over pixels). KLD and SIM are *summed* over
all (entry, action) maps and divided by their count; AUC-Judd is computed per map with fixations at
> 0.5 of the map's max and averaged over the maps where it is defined; top-1 action accuracy counts,
per entry with k distinct actions, how many of the k best-scored actions are among them.

**28 x 28 (Interaction Hotspots, table 2)** -- their ``utils/evaluation.py`` rule: one ground truth per
(image, action) pair, every point of the pair added (+1) to a zero map, blurred as above and normalised,
resized to 224 then to 28 bilinearly; the prediction resized bilinearly to 28, divided by its max and
blurred 5 x 5 (OpenCV's sigma-0 kernel, [1 4 6 4 1] / 16); KLD / SIM with eps 1e-12; AUC-Judd on the
ground truth binarised at 0.5 of its max, with a tiny (seeded) jitter that breaks ties; mean +- standard
error (population std / sqrt(n)) over pairs.

Maps are (..., H, W) tensors; batch functions take (N, H, W) and return (N,) per-map values unless said.
Everything runs in float64 on whatever device the inputs live on.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

GT_OFFSET_256 = 1e-10  # the authors' "offset trick to avoid kld nan"
EPS_28 = 1e-12  # the Hotspots metrics' eps
HOTSPOTS_GT_SIZE = 224  # the Hotspots generate_gt() resize before the 28 x 28 evaluator
HOTSPOTS_RES = 28
AUC_JITTER = 1e-7


# --------------------------------------------------------------------------------------------------
# Gaussian blur (OpenCV's conventions; torchvision's gaussian_blur agrees for odd kernels > 7)


def blur_kernel_size(h: int, w: int, k_ratio: float = 3.0) -> int:
    """sqrt(h*w) / k_ratio, truncated, made odd (85 for 256 x 256)."""
    k = int(math.sqrt(h * w) / k_ratio)
    return k + 1 if k % 2 == 0 else k


def gaussian_kernel1d(k: int, sigma: float | None = None, dtype=torch.float64) -> torch.Tensor:
    """OpenCV's ``getGaussianKernel``: sigma <= 0 / None means 0.3*((k-1)*0.5-1)+0.8, except that
    OpenCV then uses fixed binomial tables for k in {1, 3, 5, 7} (the 28 x 28 protocol's 5 x 5 blur)."""
    if k < 1 or k % 2 == 0:
        raise ValueError(f"kernel size must be a positive odd number, got {k}")
    if sigma is None or sigma <= 0:
        tables = {
            1: [1.0],
            3: [0.25, 0.5, 0.25],
            5: [0.0625, 0.25, 0.375, 0.25, 0.0625],
            7: [0.03125, 0.109375, 0.21875, 0.28125, 0.21875, 0.109375, 0.03125],
        }
        if k in tables:
            return torch.tensor(tables[k], dtype=dtype)
        sigma = 0.3 * ((k - 1) * 0.5 - 1) + 0.8
    x = torch.arange(k, dtype=dtype) - (k - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def blur_matrix(n: int, k: int, sigma: float | None = None, dtype=torch.float64) -> torch.Tensor:
    """(n, n) matrix M with M @ x = the 1-D blur of x with mirrored borders that do not repeat the edge
    (OpenCV BORDER_REFLECT_101, torch ``reflect``), as both authors' blurs do."""
    pad = k // 2
    if pad >= n:
        raise ValueError(f"a {k}-tap blur needs more than {pad} pixels, got {n}")
    g = gaussian_kernel1d(k, sigma, dtype=dtype)
    src = torch.arange(n)[:, None] + torch.arange(k)[None, :] - pad  # (n, k) source pixel of each tap
    src = torch.where(src < 0, -src, src)
    src = torch.where(src > n - 1, 2 * (n - 1) - src, src)
    m = torch.zeros(n, n, dtype=dtype)
    m.scatter_add_(1, src, g.expand(n, k).contiguous())
    return m


def gaussian_blur(maps: torch.Tensor, k: int, sigma: float | None = None) -> torch.Tensor:
    """Separable Gaussian blur of (..., H, W) maps (reflect-101 borders), as two matrix products."""
    h, w = maps.shape[-2:]
    mh = blur_matrix(h, k, sigma, dtype=maps.dtype).to(maps.device)
    mw = blur_matrix(w, k, sigma, dtype=maps.dtype).to(maps.device)
    return mh @ maps @ mw.T


def point_indices(points: torch.Tensor | Sequence, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, y) points -> integer (rows, cols): truncated toward zero (the authors' ``.long()`` / ``int()``)
    and clamped into the map. (The Afformer code indexes a -1 without clamping, which wraps to the
    opposite border; one point of the OPRA test set sits there. Clamping is the Hotspots rule.)"""
    p = torch.as_tensor(points, dtype=torch.float64).reshape(-1, 2)
    x = p[:, 0].long().clamp(0, w - 1)
    y = p[:, 1].long().clamp(0, h - 1)
    return y, x


# --------------------------------------------------------------------------------------------------
# Ground truth


def gt_map_256(point_sets: Sequence, h: int, w: int) -> torch.Tensor:
    """One Afformer ground-truth map (H, W) from the point lists of one (entry, action): points set to 1
    (not added), +1e-10, blurred with the sqrt(h*w)/3 kernel. Not normalised (the metrics normalise)."""
    pm = torch.zeros(h, w, dtype=torch.float64)
    for points in point_sets:
        rows, cols = point_indices(points, h, w)
        pm[rows, cols] = 1.0
    return gaussian_blur(pm + GT_OFFSET_256, blur_kernel_size(h, w))


def gt_map_28(point_sets: Sequence, h: int, w: int) -> torch.Tensor:
    """One Interaction Hotspots ground truth (28, 28) from every point list of an (image, action) pair:
    points added (+1 each), blurred at the annotation size, normalised, resized to 224, normalised,
    resized to 28. An empty pair gives an all-zero map (the metrics then use a uniform target)."""
    hm = torch.zeros(h, w, dtype=torch.float64)
    for points in point_sets:
        rows, cols = point_indices(points, h, w)
        hm.index_put_((rows, cols), torch.ones(len(rows), dtype=torch.float64), accumulate=True)
    hm = gaussian_blur(hm, blur_kernel_size(h, w))
    if hm.sum() > 0:
        hm = hm / hm.sum()
    hm = resize_bilinear(hm, HOTSPOTS_GT_SIZE)
    hm = hm / (hm.sum() + EPS_28)
    return resize_bilinear(hm, HOTSPOTS_RES)


def resize_bilinear(maps: torch.Tensor, size: int) -> torch.Tensor:
    """(..., H, W) -> (..., size, size), bilinear, align_corners=False, no antialiasing (both authors)."""
    if maps.shape[-2:] == (size, size):
        return maps
    shape = maps.shape
    x = maps.reshape(-1, 1, shape[-2], shape[-1])
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return x.reshape(*shape[:-2], size, size)


# --------------------------------------------------------------------------------------------------
# 256 x 256 protocol (Afformer)


def _normalise_rows(m: torch.Tensor) -> torch.Tensor:
    flat = m.reshape(m.shape[0], -1).double()
    return flat / flat.sum(dim=1, keepdim=True)


def kld_256(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Per-map KL(gt || pred), both normalised to sum 1; (N, H, W) -> (N,). A zero in the prediction
    where the ground truth has mass gives +inf (the authors take log(pred) unguarded)."""
    p, g = _normalise_rows(pred), _normalise_rows(gt)
    terms = torch.where(g > 0, g * (torch.log(g) - torch.log(p)), torch.zeros_like(g))
    return terms.sum(dim=1)


def sim_256(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Per-map histogram intersection of the sum-1 maps; (N, H, W) -> (N,)."""
    return torch.minimum(_normalise_rows(pred), _normalise_rows(gt)).sum(dim=1)


def auc_judd_from_fixations(saliency: torch.Tensor, fixations: torch.Tensor, eps: float = 0.0) -> float:
    """AUC-Judd of one saliency map given a boolean fixation map (same shape), the saliency benchmark's
    definition both authors adapt: the saliency min-max normalised (``eps`` added to the range: 0 in
    the Afformer code, 1e-12 in the Hotspots code); thresholds at each fixated value, sorted descending;
    true-positive rate k/n_fix, false-positive rate (#pixels >= threshold - k)/(n_pixels - n_fix);
    trapezoid over (0,0) ... (1,1). Ties are not broken here. NaN without fixations, and (eps 0) when
    the saliency map is constant (0/0, as in the Afformer code)."""
    s = saliency.reshape(-1).double()
    f = fixations.reshape(-1).bool().to(s.device)
    n_fix, n_pix = int(f.sum()), s.numel()
    if n_fix == 0:
        return float("nan")
    s = (s - s.min()) / (s.max() - s.min() + eps)
    if not bool(torch.isfinite(s).all()):
        return float("nan")
    thresholds = torch.sort(s[f], descending=True).values
    k = torch.arange(1, n_fix + 1, dtype=torch.float64, device=s.device)
    # pixels >= each threshold, by binary search in the sorted map (NaN sorts last and matches nothing)
    above = (n_pix - torch.searchsorted(torch.sort(s).values, thresholds, side="left")).double()
    zero, one = s.new_zeros(1), s.new_ones(1)
    tp = torch.cat([zero, k / n_fix, one])
    fp = torch.cat([zero, (above - k) / max(n_pix - n_fix, 1), one])
    return float(torch.trapezoid(tp, fp))


def auc_judd_256(pred: torch.Tensor, gt: torch.Tensor) -> float:
    """The Afformer AUC-Judd of one map: fixations where gt / max(gt) > 0.5; NaN when undefined."""
    g = gt.double()
    return auc_judd_from_fixations(pred, (g / g.max()) > 0.5)


@dataclass
class Scores256:
    kld: float
    sim: float
    auc_j: float | None  # None: undefined for every map (e.g. a constant prediction)
    top1: float | None
    n: int  # (entry, action) maps scored


def top1_accuracy(action_scores: Sequence[torch.Tensor], gt_actions: Sequence[Sequence[int]]) -> float:
    """The authors' top-1: per entry with k distinct ground-truth actions, count how many of its k
    highest-scored actions are ground truth; divide by the total number of ground-truth actions."""
    hits = total = 0
    for scores, actions in zip(action_scores, gt_actions, strict=True):
        gt = set(int(a) for a in actions)
        top = torch.as_tensor(scores).double().topk(len(gt)).indices.tolist()
        hits += sum(1 for a in top if a in gt)
        total += len(gt)
    if total == 0:
        raise ValueError("top-1 accuracy over zero ground-truth actions")
    return hits / total


def score_256(
    pred: torch.Tensor,
    gt: torch.Tensor,
    action_scores: Sequence[torch.Tensor] | None = None,
    gt_actions: Sequence[Sequence[int]] | None = None,
) -> tuple[Scores256, dict[str, torch.Tensor]]:
    """Score N (pred, gt) map pairs (N, H, W) under the 256 rule. Returns the summary and the per-map
    values {"kld", "sim", "auc_j"} (NaN where AUC is undefined)."""
    if pred.shape != gt.shape or pred.dim() != 3:
        raise ValueError(f"pred and gt must both be (N, H, W), got {tuple(pred.shape)} and {tuple(gt.shape)}")
    n = pred.shape[0]
    if n == 0:
        raise ValueError("nothing to score")
    kld = kld_256(pred, gt)
    sim = sim_256(pred, gt)
    auc = torch.tensor([auc_judd_256(p, g) for p, g in zip(pred, gt)], dtype=torch.float64)
    valid = auc[auc >= 0]  # the authors keep maps with AUC >= 0 (NaN and "no fixation" drop out)
    top1 = None
    if action_scores is not None and gt_actions is not None:
        top1 = top1_accuracy(action_scores, gt_actions)
    summary = Scores256(
        kld=float(kld.sum() / n),
        sim=float(sim.sum() / n),
        auc_j=float(valid.mean()) if len(valid) else None,
        top1=top1,
        n=n,
    )
    return summary, {"kld": kld, "sim": sim, "auc_j": auc}


# --------------------------------------------------------------------------------------------------
# 28 x 28 protocol (Interaction Hotspots)


def prepare_pred_28(pred: torch.Tensor) -> torch.Tensor:
    """(N, H, W) predictions -> the Hotspots evaluator's input: bilinear to 28, / (max + eps), 5x5 blur."""
    p = resize_bilinear(pred.double(), HOTSPOTS_RES)
    p = p / (p.amax(dim=(-2, -1), keepdim=True) + EPS_28)
    return gaussian_blur(p, 5)


def kld_28(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """sum gt * log(gt / (pred + eps) + eps) of the eps-normalised maps; (N, H, W) -> (N,)."""
    p = pred / (pred.sum(dim=(-2, -1), keepdim=True) + EPS_28)
    g = gt / (gt.sum(dim=(-2, -1), keepdim=True) + EPS_28)
    return (g * torch.log(g / (p + EPS_28) + EPS_28)).sum(dim=(-2, -1))


def sim_28(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    p = pred / (pred.sum(dim=(-2, -1), keepdim=True) + EPS_28)
    g = gt / (gt.sum(dim=(-2, -1), keepdim=True) + EPS_28)
    return torch.minimum(p, g).sum(dim=(-2, -1))


def auc_judd_28(pred: torch.Tensor, gt: torch.Tensor, generator: torch.Generator | None = None) -> float:
    """The Hotspots AUC-Judd of one prepared map: fixations where gt / max + 1e-12 > 0.5, the saliency
    jittered by U(0, 1e-7) (drawn from ``generator``: seeded, so a run is repeatable) to break ties."""
    g = gt.double()
    if g.max() <= 0:
        return float("nan")
    fix = (g / g.max() + EPS_28) > 0.5
    jitter = torch.rand(pred.shape, generator=generator, dtype=torch.float64) * AUC_JITTER
    return auc_judd_from_fixations(pred.double().cpu() + jitter, fix.cpu(), eps=EPS_28)


@dataclass
class Scores28:
    kld: tuple[float, float]  # (mean, standard error)
    sim: tuple[float, float]
    auc_j: tuple[float, float]
    n: int  # pairs scored


def mean_se(values: torch.Tensor) -> tuple[float, float]:
    """(mean, population std / sqrt(n)) over the finite values (numpy's np.std, ddof=0)."""
    v = values[torch.isfinite(values)].double()
    if v.numel() == 0:
        return (float("nan"), float("nan"))
    return float(v.mean()), float(v.std(unbiased=False) / math.sqrt(v.numel()))


def score_28(pred: torch.Tensor, gt: torch.Tensor, seed: int = 0) -> tuple[Scores28, dict[str, torch.Tensor]]:
    """Score N (image, action) pairs under the Hotspots rule. ``pred``: (N, H, W) non-negative maps at
    any resolution; ``gt``: (N, 28, 28) from :func:`gt_map_28`. All-zero ground truth scores KLD/SIM
    against a uniform target and drops out of AUC, as in their evaluator."""
    if pred.dim() != 3 or gt.dim() != 3 or pred.shape[0] != gt.shape[0]:
        raise ValueError(
            f"pred (N,H,W) and gt (N,28,28) expected, got {tuple(pred.shape)}, {tuple(gt.shape)}"
        )
    if pred.shape[0] == 0:
        raise ValueError("nothing to score")
    p = prepare_pred_28(pred)
    g = gt.double().to(p.device)
    empty = g.sum(dim=(-2, -1)) == 0
    g_real = torch.where(empty[:, None, None], torch.full_like(g, 1.0 / g[0].numel()), g)
    kld = kld_28(p, g_real)
    sim = sim_28(p, g_real)
    gen = torch.Generator().manual_seed(seed)
    auc = torch.tensor([auc_judd_28(pi.cpu(), gi.cpu(), gen) for pi, gi in zip(p, g)], dtype=torch.float64)
    summary = Scores28(kld=mean_se(kld), sim=mean_se(sim), auc_j=mean_se(auc), n=int(pred.shape[0]))
    return summary, {"kld": kld, "sim": sim, "auc_j": auc}
