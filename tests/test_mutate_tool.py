"""``tools/mutate.py`` (``make mutate``): a ``--module`` run must not wipe the other modules' figures."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def load_tool():
    spec = importlib.util.spec_from_file_location("mutate_tool", ROOT / "tools" / "mutate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_one_module_run_keeps_the_figures_of_the_others(tmp_path):
    merge_summary = load_tool().merge_summary
    path = tmp_path / "build" / "mutation.json"
    first = {"mine/rule.py": {"mutants": 10, "killed": 9}, "shards/writer.py": {"mutants": 4, "killed": 2}}
    assert merge_summary(path, first) == first
    rerun = {"shards/writer.py": {"mutants": 4, "killed": 4}}
    expected = {"mine/rule.py": {"mutants": 10, "killed": 9}, "shards/writer.py": {"mutants": 4, "killed": 4}}
    assert merge_summary(path, rerun) == expected
    assert json.loads(path.read_text()) == expected
    assert [p.name for p in path.parent.iterdir()] == ["mutation.json"]  # no temporary file left
