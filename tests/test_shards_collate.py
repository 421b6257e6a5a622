"""Batches of clips of different lengths: collate_samples' padded format is what Afformer takes."""

from __future__ import annotations

import pytest
import torch

from maskahand.afformer.model import build_model
from maskahand.core.config import AfformerConfig
from maskahand.shards.reader import collate_samples
from maskahand.shards.schema import MASKAHAND_SCHEMA, MaskAHandSample

pytestmark = pytest.mark.usefixtures("torch_one_thread")

S = 32


def sample(key: str, t: int, seed: int) -> MaskAHandSample:
    g = torch.Generator().manual_seed(seed)
    meta = {"schema": MASKAHAND_SCHEMA, "clip_key": key, "video_id": key, "size": S, "targets": []}
    return MaskAHandSample(
        key=key,
        frames=torch.randint(0, 256, (t, 3, S, S), dtype=torch.uint8, generator=g),
        targets=torch.randint(0, 256, (1, 3, S, S), dtype=torch.uint8, generator=g),
        heatmaps=torch.rand(1, S, S, generator=g),
        meta=meta,
    )


@pytest.mark.slow
def test_mixed_clip_lengths_give_each_sample_its_own_result():
    torch.manual_seed(0)
    model = build_model(AfformerConfig(hidden=64, heads=2)).eval()
    # non-zero time relative positions and level embeddings: a padded frame leaking in would show
    with torch.no_grad():
        for name, p in model.decoder.named_parameters():
            if "rel_pos" in name or "level_embed" in name:
                p.normal_(0, 0.5)
    samples = [sample("short", 10, 1), sample("long", 32, 2), sample("tiny", 4, 3)]
    batch = collate_samples(samples)
    assert batch["frames"].shape == (3, 32, 3, S, S) and batch["num_frames"].tolist() == [10, 32, 4]
    with torch.no_grad():
        together = model(
            batch["frames"].float() / 255, batch["targets"][:, 0].float() / 255, batch["num_frames"]
        )
        for i, s in enumerate(samples):
            alone = model(s.frames[None].float() / 255, s.targets[:1].float() / 255)
            torch.testing.assert_close(
                together.heatmap_logits[i], alone.heatmap_logits[0], atol=2e-4, rtol=1e-4
            )
        # and the padding is what is masked: without num_frames the short clips come out different
        unmasked = model(batch["frames"].float() / 255, batch["targets"][:, 0].float() / 255)
    assert (unmasked.heatmap_logits[0] - together.heatmap_logits[0]).abs().max() > 1e-2
