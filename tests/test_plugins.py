"""Extension points (``maskahand.core.plugins``): an evaluation dataset or a detector backend is one module.

The in-repository modules are found by their declarations; an out-of-tree module is installed the way a
distribution is (a ``*.dist-info`` with ``entry_points.txt`` on the path of a real ``maskahand`` process)
and appears in ``--help``, in the option's choices, in config validation and behind ``--dataset``/``--backend``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from maskahand.core.plugins import (
    DATASETS,
    DETECTOR_BACKENDS,
    ExtensionPoint,
    PluginError,
    UnknownPluginError,
)

REPO = Path(__file__).resolve().parents[1]

FAKE_DATASET = '''
"""A benchmark that lives outside maskahand: one action, each entry's points on a 64 x 64 frame."""
import json
from pathlib import Path

from maskahand.evaluation.benchmark import AnnotationError, Benchmark, Entry

DATASET = {"name": "fake", "help": "a fake benchmark from a plugin (100% points)", "reader": "read_fake"}


def read_fake(annotations, root, split="test"):
    if annotations is None:
        raise AnnotationError(f"fake reader: split {split!r} under {root} has no annotations here")
    rows = json.loads(Path(annotations).read_text())
    entries = [
        Entry(index=i, image=r["image"], video="", width=64, height=64, actions=(0,),
              points=(tuple(tuple(p) for p in r["points"]),))
        for i, r in enumerate(rows)
    ]
    return Benchmark("fake", split, ["poke"], entries, annotations, root)
'''

FAKE_BACKEND = '''
"""A detector backend that lives outside maskahand: one contact hand at a fixed box in every frame."""
from maskahand.detector.base import Hand, HandDetector

DETECTOR_BACKEND = {
    "name": "fakehands",
    "help": "a fixed hand from a plugin",
    "factory": "FakeHands",
    "contact_judged": False,
}


class FakeHands(HandDetector):
    name = "fakehands"
    version = "7"

    def __init__(self, cfg):
        self.batch_size = cfg.batch_size

    def _detect_batch(self, frames, *, video_id, frame_indices):
        return [[Hand(box=(1.0, 2.0, 30.0, 40.0), state="contact", score=0.75)] for _ in frames]
'''


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory) -> Path:
    """A folder that holds two plugin modules and the distribution metadata that registers them."""
    root = tmp_path_factory.mktemp("plugins")
    (root / "fake_dataset_plugin.py").write_text(FAKE_DATASET)
    (root / "fake_backend_plugin.py").write_text(FAKE_BACKEND)
    info = root / "maskahand_fake_plugins-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: maskahand-fake-plugins\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[maskahand.datasets]\nfake = fake_dataset_plugin\n\n"
        "[maskahand.detector_backends]\nfakehands = fake_backend_plugin\n"
    )
    return root


def maskahand(plugin_path: Path, *argv: str, code: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(plugin_path), str(REPO)]), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-c", code] if code else [sys.executable, "-m", "maskahand.cli", *argv]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)


# --- the repository's own modules ----------------------------------------------------------------------


def test_the_repository_modules_are_found_with_what_they_declare():
    from maskahand.detector.hircnn import HircnnDetector
    from maskahand.detector.mediapipe_hands import MediapipeDetector
    from maskahand.detector.precomputed import PrecomputedDetector
    from maskahand.evaluation.assistq import read_assistq
    from maskahand.evaluation.epic import read_epic_hotspots
    from maskahand.evaluation.opra import read_opra

    assert DATASETS.names() == ["assistq", "epic_hotspots", "opra"]
    assert [DATASETS.load(n) for n in DATASETS.names()] == [read_assistq, read_epic_hotspots, read_opra]
    assert DETECTOR_BACKENDS.names() == ["hircnn", "mediapipe", "precomputed"]
    loaded = [DETECTOR_BACKENDS.load(n) for n in DETECTOR_BACKENDS.names()]
    assert loaded == [HircnnDetector, MediapipeDetector, PrecomputedDetector]
    options = {n: p.options for n, p in DETECTOR_BACKENDS.plugins().items()}
    assert options == {
        "hircnn": {"contact_judged": True, "detect_size": "torchvision"},
        "mediapipe": {"contact_judged": False, "detect_size": "full"},
        "precomputed": {"contact_judged": True, "detect_size": "stored"},
    }
    assert all(p.source == "maskahand" and p.help for p in DATASETS.plugins().values())
    with pytest.raises(
        UnknownPluginError, match="unknown dataset 'nope'; known: assistq, epic_hotspots, opra"
    ):
        DATASETS.get("nope")


def test_a_malformed_declaration_names_its_file(tmp_path, monkeypatch):
    pkg = tmp_path / "plugpkg_20d"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "good.py").write_text(
        'THING = {"name": "good", "help": "fine", "make": "make"}\ndef make(): return 3\n'
    )
    (pkg / "plain.py").write_text("X = 1\n")  # declares nothing: not a plugin
    monkeypatch.syspath_prepend(str(tmp_path))
    point = ExtensionPoint("thing", "plugpkg_20d.things", "plugpkg_20d", "THING", "make")
    assert point.names() == ["good"] and point.load("good")() == 3
    (pkg / "bad.py").write_text('THING = {"name": "bad", "help": "typo", "maker": "make"}\n')
    with pytest.raises(
        PluginError, match=r"bad\.py: THING needs string keys .* lacks \['make'\]; unknown keys \['maker'\]"
    ):
        ExtensionPoint("thing", "plugpkg_20d.things", "plugpkg_20d", "THING", "make").plugins()
    (pkg / "bad.py").write_text('THING = {"name": "bad", "help": "typo", "make": "make", "colour": 1}\n')
    with pytest.raises(
        PluginError, match=r"bad\.py: THING needs .*; unknown keys \['colour'\] \(known: \[\]\)"
    ):
        ExtensionPoint("thing", "plugpkg_20d.things", "plugpkg_20d", "THING", "make").plugins()
    (pkg / "bad.py").write_text('THING = {"name": "good", "help": "twice", "make": "make"}\n')
    with pytest.raises(PluginError, match="'good' is declared by plugpkg_20d"):
        ExtensionPoint("thing", "plugpkg_20d.things", "plugpkg_20d", "THING", "make").plugins()
    (pkg / "bad.py").write_text('THING = dict(name="x", help="not a literal", make="make")\n')
    with pytest.raises(PluginError, match=r"bad\.py: THING must be a literal dict"):
        ExtensionPoint("thing", "plugpkg_20d.things", "plugpkg_20d", "THING", "make").plugins()


# --- out of tree: a distribution's entry points ---------------------------------------------------------


def test_plugins_are_listed_without_being_imported(plugin_path):
    code = (
        "import sys; from maskahand.cli import build_parser; build_parser(); "
        "from maskahand.core.plugins import DATASETS, DETECTOR_BACKENDS; "
        "print(DATASETS.names(), DETECTOR_BACKENDS.names(), DATASETS.get('fake').source); "
        "print([m for m in ('fake_dataset_plugin', 'fake_backend_plugin', 'torch') if m in sys.modules])"
    )
    out = maskahand(plugin_path, code=code)
    lines = out.stdout.strip().splitlines()
    assert lines == [
        "['assistq', 'epic_hotspots', 'fake', 'opra'] ['fakehands', 'hircnn', 'mediapipe', 'precomputed'] "
        "maskahand-fake-plugins (entry point fake = fake_dataset_plugin)",
        "[]",
    ], out.stdout + out.stderr


@pytest.mark.parametrize(
    ("argv", "listed"),
    [
        (
            ["eval", "--help"],
            ["{assistq,epic_hotspots,fake,opra}", "a fake benchmark from a plugin (100% points)"],
        ),
        (["finetune", "--help"], ["{assistq,epic_hotspots,fake,opra}", "a fake benchmark from a plugin"]),
        (
            ["detector", "run", "--help"],
            ["{fakehands,hircnn,mediapipe,precomputed}", "a fixed hand from a plugin"],
        ),
        (["mine", "--help"], ["{fakehands,hircnn,mediapipe,precomputed}"]),
    ],
)
def test_help_lists_the_plugins(plugin_path, argv, listed):
    out = maskahand(plugin_path, *argv)
    assert out.returncode == 0, out.stderr
    text = " ".join(out.stdout.split())  # argparse wraps lines
    assert all(item in text for item in listed), out.stdout


def test_eval_dataset_plugin_runs_its_reader(plugin_path, tmp_path):
    ann = tmp_path / "fake.json"
    ann.write_text(
        json.dumps([{"image": f"im{i}.jpg", "points": [[10 + i, 20], [30, 40 - i]]} for i in range(3)])
    )
    out = tmp_path / "out"
    argv = ["eval", "--dataset", "fake", "--annotations", str(ann), "--baseline", "center-bias"]
    r = maskahand(
        plugin_path, *argv, "--protocol", "256", "--out", str(out), f"eval.cache_dir={tmp_path / 'gt'}"
    )
    assert r.returncode == 0, r.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["dataset"] == "fake" and metrics["protocols"]["256"]["n"] == 3


def test_finetune_dataset_plugin_reaches_its_reader(plugin_path, tmp_path):
    r = maskahand(plugin_path, "finetune", "--dataset", "fake", "--data", str(tmp_path), "--init", "none")
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1] == (
        f"maskahand finetune: fake reader: split 'train' under {tmp_path} has no annotations here"
    )


def test_detector_backend_plugin_runs(plugin_path, tmp_path):
    img = tmp_path / "a.png"
    Image.new("RGB", (48, 64), (90, 120, 30)).save(img)
    out = tmp_path / "hands.png"
    r = maskahand(plugin_path, "detector", "run", str(img), "--out", str(out), "--backend", "fakehands")
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["hands"] == [{"box": [1.0, 2.0, 30.0, 40.0], "state": "contact", "score": 0.75}]
    assert summary["detector"] == {"name": "fakehands", "version": "7"}
    assert "backend: fakehands" in (tmp_path / "hands.config.yaml").read_text()
    assert Image.open(out).size == (48, 64)


def test_mining_rule_reads_the_plugin_declaration(plugin_path):
    code = (
        "from maskahand.core.config import MineRecipe; from maskahand.core.configbase import apply_overrides; "
        "from maskahand.mine.rule import rule_record; from maskahand.mine.resolution import detector_max_side; "
        "r = apply_overrides(MineRecipe(), ['detector.backend=fakehands']); "
        "rec = rule_record(r.mine, r.detector); "
        "print(rec['detector_backend'], rec['contact_judged'], detector_max_side(r.detector, 1920, 1080, 256))"
    )
    out = maskahand(plugin_path, code=code)
    assert out.stdout.strip() == "fakehands False None", out.stdout + out.stderr


def test_a_broken_plugin_is_ignored_with_a_warning(plugin_path, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "broken_plugin.py").write_text('DATASET = {"name": "other", "help": "h", "reader": "r"}\n')
    info = broken / "broken_plugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[maskahand.datasets]\nbroken = broken_plugin\nmissing = no_such_module\n"
    )
    r = maskahand(plugin_path, code="from maskahand.core.plugins import DATASETS; print(DATASETS.names())")
    assert "broken" not in r.stdout  # the fixture's path has no broken plugin: this is the control
    env_path = os.pathsep.join([str(broken), str(plugin_path)])
    r = maskahand(Path(env_path), code="from maskahand.core.plugins import DATASETS; print(DATASETS.names())")
    assert r.stdout.strip() == "['assistq', 'epic_hotspots', 'fake', 'opra']", r.stdout + r.stderr
    assert "declares 'other', its entry point says 'broken'" in r.stderr
    assert "no_such_module: module not found" in r.stderr
