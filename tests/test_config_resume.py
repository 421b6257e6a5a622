"""``configbase.check_resume``: a run folder refuses a config that changes results, runtime-only fields aside."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import pytest

from maskahand.core.config import MineRecipe, SynthRecipe
from maskahand.core.configbase import (
    RUNTIME,
    ConfigChangedError,
    ConfigError,
    apply_overrides,
    check_resume,
    result_dict,
    save_config,
)


@dataclass
class Inner:
    size: int = 4
    workers: int = field(default=2, metadata=RUNTIME)


@dataclass
class Outer:
    inner: Inner = field(default_factory=Inner)
    placement: Inner = field(default_factory=Inner, metadata=RUNTIME)  # a whole runtime-only section
    seed: int = 0


def test_result_dict_leaves_out_runtime_fields_at_any_depth():
    assert result_dict(Outer()) == {"inner": {"size": 4}, "seed": 0}


def test_same_config_and_runtime_changes_resume(tmp_path):
    check_resume(Outer(), tmp_path)  # nothing saved yet
    save_config(Outer(), tmp_path)
    check_resume(Outer(), tmp_path)
    changed = Outer(inner=Inner(workers=9), placement=Inner(size=1, workers=1))
    check_resume(changed, tmp_path)


def test_a_result_change_is_refused_naming_every_changed_key(tmp_path):
    save_config(Outer(), tmp_path)
    with pytest.raises(ConfigChangedError) as e:
        check_resume(Outer(inner=Inner(size=8, workers=7), seed=1), tmp_path)
    assert e.value.changes == ["inner.size: 4 -> 8", "seed: 0 -> 1"]
    assert str(tmp_path) in str(e.value) and isinstance(e.value, ConfigError)


def test_keys_on_one_side_only_are_changes(tmp_path):
    (tmp_path / "config.yaml").write_text("inner: {size: 4}\nseed: 0\nold_key: 3\n")
    with pytest.raises(ConfigChangedError) as e:
        check_resume(Outer(), tmp_path)
    assert e.value.changes == ["old_key: 3 -> None"]
    (tmp_path / "config.yaml").write_text("inner: {}\nseed: 0\n")
    with pytest.raises(ConfigChangedError) as e:
        check_resume(Outer(), tmp_path)
    assert e.value.changes == ["inner.size: None -> 4"]


def test_an_unreadable_saved_config_names_the_file(tmp_path):
    (tmp_path / "config.yaml").write_text("inner: [unclosed\n")
    with pytest.raises(ConfigError, match="config.yaml is not valid YAML"):
        check_resume(Outer(), tmp_path)
    (tmp_path / "config.yaml").write_text("- a list\n")
    with pytest.raises(ConfigError, match="config.yaml does not hold a mapping"):
        check_resume(Outer(), tmp_path)


@pytest.mark.parametrize(
    ("recipe", "runtime", "result"),
    [
        (
            SynthRecipe(),
            [
                "synth.device=cpu",
                "synth.batch_size=3",
                "ray.num_cpus=1",
                "gpus_per_worker=0",
                "cpus_per_worker=2",
            ],
            ["synth.variants=2", "synth.fill=zero", "shards.max_samples=5"],
        ),
        (
            MineRecipe(),
            ["detector.device=cpu", "detector.batch_size=2", "detector.amp=false", "video.threads=2"]
            + ["workers.decoders=3", "ray.num_cpus=1"],
            [
                "mine.contact_score=0.5",
                "detector.backend=hircnn",
                "mine.clip_length=16",
                "shards.max_samples=5",
            ],
        ),
    ],
)
def test_the_stage_recipes_mark_what_may_change_on_resume(tmp_path, recipe, runtime, result):
    recipe = apply_overrides(recipe, [])  # validated as loaded recipes are (detector.backend=auto resolved)
    save_config(recipe, tmp_path)
    check_resume(apply_overrides(recipe, runtime), tmp_path)
    for override in result:
        with pytest.raises(ConfigChangedError, match=override.split("=")[0]):
            check_resume(apply_overrides(recipe, [override]), tmp_path)


def test_mine_refuses_to_resume_with_a_changed_rule(tmp_path):
    from maskahand.mine.pipeline import plan

    videos = tmp_path / "videos"
    videos.mkdir()
    (videos / "a.mp4").write_bytes(b"")  # discovered by name; never opened before the check
    out = tmp_path / "out"
    out.mkdir()
    recipe = MineRecipe()
    saved = dataclasses.replace(recipe, mine=dataclasses.replace(recipe.mine, contact_score=0.5))
    save_config(saved, out)
    with pytest.raises(ConfigChangedError, match=r"mine.contact_score: 0.5 -> 0.99"):
        plan(recipe, str(videos), out)
    assert not (out / "ledger.jsonl").exists()
