"""Typed configs: paper defaults, YAML loading, dotted overrides, errors that name the key."""

from __future__ import annotations

import pytest
import yaml

from maskahand.core import config as C
from maskahand.core.configbase import ConfigError, apply_overrides, dump_config, load_config, save_config


def test_paper_defaults_are_the_papers():
    r = C.MineRecipe()
    assert (r.mine.fps, r.mine.clip_length, r.mine.clip_stride, r.mine.contact_score) == (5.0, 32, 16, 0.99)
    s = C.SynthConfig()
    assert (s.hand_mask_scale, s.random_masks, s.fill, s.distortion_scale, s.blur_kernel, s.output_size) == (
        1.5,
        1,
        "noise",
        0.5,
        85,
        256,
    )
    h = C.HircnnConfig()
    assert (h.score_threshold, h.max_detections, h.state_iou) == (0.7, 2, 0.5)
    m = C.AfformerConfig()
    assert (m.hidden, m.heads, m.image_levels, m.video_level, m.backbone_lr_factor) == (
        256,
        4,
        ["p4", "p3", "p2"],
        "p3",
        0.1,
    )
    o = C.OptimConfig()
    assert (o.lr, o.weight_decay) == (3e-4, 0.05)


def test_dotted_overrides_set_nested_fields_and_coerce_types():
    r = apply_overrides(
        C.MineRecipe(),
        ["mine.fps=10", "detector.hircnn.weights=/tmp/w.pth", "video.max_side=null", "mine.contact_score=1"],
    )
    assert r.mine.fps == 10.0 and isinstance(r.mine.fps, float)
    assert r.detector.hircnn.weights == "/tmp/w.pth"
    assert r.video.max_side is None
    assert r.mine.contact_score == 1.0
    # the original is untouched
    assert C.MineRecipe().mine.fps == 5.0


def test_list_override_and_string_field_given_a_number():
    r = apply_overrides(C.PretrainRecipe(), ["model.image_levels=[p3,p2]", "train.out_dir=123"])
    assert r.model.image_levels == ["p3", "p2"]
    assert r.train.out_dir == "123"


@pytest.mark.parametrize(
    "override, key",
    [
        ("mine.fpz=5", "mine.fpz"),
        ("mine.fps=fast", "mine.fps"),
        ("mine.clip_length=3.5", "mine.clip_length"),
        ("detector.backend=yolo", "detector.backend"),
        ("nosuch.key=1", "nosuch"),
        ("detector.hircnn.score=0.5", "detector.hircnn.score"),
        ("mine.short_video=true", "mine.short_video"),
    ],
)
def test_bad_overrides_name_the_key(override, key):
    with pytest.raises(ConfigError) as e:
        apply_overrides(C.MineRecipe(), [override])
    assert key in str(e.value)


def test_validation_rules_reject_impossible_values():
    with pytest.raises(ConfigError, match="blur_kernel"):
        apply_overrides(C.SynthRecipe(), ["synth.blur_kernel=84"])
    with pytest.raises(ConfigError, match="fps"):
        apply_overrides(C.MineRecipe(), ["video.fps=0"])


def test_yaml_roundtrip_and_errors(tmp_path):
    r = apply_overrides(C.SynthRecipe(), ["synth.variants=2", "synth.fill=zero"])
    path = save_config(r, tmp_path)
    assert path.name == "config.yaml"
    loaded = load_config(C.SynthRecipe, path)
    assert loaded == r
    assert yaml.safe_load(dump_config(loaded))["synth"]["fill"] == "zero"

    # YAML, then overrides on top
    assert load_config(C.SynthRecipe, path, ["synth.variants=7"]).synth.variants == 7

    bad = tmp_path / "bad.yaml"
    bad.write_text("synth:\n  variants: 2\n  blurr_kernel: 3\n")
    with pytest.raises(ConfigError) as e:
        load_config(C.SynthRecipe, bad)
    assert "synth.blurr_kernel" in str(e.value) and str(bad) in str(e.value)

    wrong_type = tmp_path / "wrong.yaml"
    wrong_type.write_text("synth:\n  variants: many\n")
    with pytest.raises(ConfigError, match="synth.variants"):
        load_config(C.SynthRecipe, wrong_type)

    with pytest.raises(ConfigError, match="does not exist"):
        load_config(C.SynthRecipe, tmp_path / "missing.yaml")


def test_every_recipe_dumps_and_reloads(tmp_path):
    for cls in (
        C.VideoRecipe,
        C.DetectorRecipe,
        C.DetectorTrainRecipe,
        C.MineRecipe,
        C.SynthRecipe,
        C.PretrainRecipe,
        C.FinetuneRecipe,
    ):
        path = tmp_path / f"{cls.__name__}.yaml"
        cfg = load_config(cls)  # the defaults, resolved (detector.backend=auto names the backend that runs)
        path.write_text(dump_config(cfg))
        assert load_config(cls, path) == cfg
