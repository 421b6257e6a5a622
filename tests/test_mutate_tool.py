"""``tools/mutate.py`` (``make mutate``): how it reads mutmut's results, classifies them, applies the floor,
lists the mutants not killed, stages the packages, and its exit status. The result files are written by
mutmut's own code (``SourceFileMutationData.save``) and the diffs by mutmut's own mutator, not by hand."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import tomllib
from mutmut.mutation.data import SourceFileMutationData

from tests.tool_util import load_tool

ROOT = Path(__file__).resolve().parent.parent
FILE = "mine/rule.py"
MODULE = "maskahand.mine.rule"
PREFIX = MODULE + "."


@pytest.fixture(scope="module")
def tool():
    return load_tool("mutate")


def write_meta(build: Path, codes: dict[str, int | None], monkeypatch) -> Path:
    """mutmut's result file for ``mine/rule.py`` in a staged copy, written by mutmut itself."""
    (build / "mutants" / "src" / "maskahand" / "mine").mkdir(parents=True, exist_ok=True)
    monkeypatch.chdir(build)  # mutmut writes mutants/<path>.meta relative to the working folder
    data = SourceFileMutationData(path="src/maskahand/mine/rule.py")
    data.exit_code_by_key = dict(codes)
    data.durations_by_key = {name: 0.1 for name, code in codes.items() if code is not None}
    data.estimated_time_of_tests_by_mutant = {name: 0.2 for name in codes}
    data.save()
    return build


def codes_of(*groups: tuple[str, int | None, int]) -> dict[str, int | None]:
    """Mutant names as mutmut gives them (functions and methods), ``count`` per (function, exit code)."""
    out: dict[str, int | None] = {}
    for function, code, count in groups:
        for _ in range(count):
            out[f"{PREFIX}{function}__mutmut_{len(out) + 1}"] = code
    return out


def test_a_one_module_run_keeps_the_figures_of_the_others(tool, tmp_path):
    path = tmp_path / "build" / "mutation.json"
    first = {"mine/rule.py": {"mutants": 10, "killed": 9}, "shards/writer.py": {"mutants": 4, "killed": 2}}
    assert tool.merge_summary(path, first) == first
    rerun = {"shards/writer.py": {"mutants": 4, "killed": 4}}
    expected = {"mine/rule.py": {"mutants": 10, "killed": 9}, "shards/writer.py": {"mutants": 4, "killed": 4}}
    assert tool.merge_summary(path, rerun) == expected
    assert json.loads(path.read_text()) == expected
    assert [p.name for p in path.parent.iterdir()] == ["mutation.json"]  # no temporary file left


def test_mutmut_results_are_classified_and_an_incomplete_run_fails(tool, tmp_path, monkeypatch):
    codes = codes_of(
        ("x_event_windows", 1, 1),  # a test failed
        ("x_event_windows", 3, 1),  # pytest internal error: mutmut counts it killed
        ("xǁStreamingClipSelectorǁpush", 36, 1),  # timeout
        ("xǁStreamingClipSelectorǁpush", 37, 1),  # caught by the type check
        ("x_rule_record", 0, 1),  # survived
        ("x_mining_video_config", 33, 1),  # no test calls it
        ("x_mining_video_config", 5, 1),  # no tests collected
        ("x_rule_record", 35, 1),  # suspicious
        ("x_rule_record", -11, 1),  # segfault
        ("x_event_windows", None, 1),  # not checked
        ("x_event_windows", 2, 1),  # interrupted
        ("x_event_windows", 34, 1),  # skipped
    )
    build = write_meta(tmp_path / "build", codes, monkeypatch)
    read = tool.read_results(tool.meta_path(build, MODULE))
    assert read == codes
    row = tool.summarize(read, 85.0)
    assert {k: row[k] for k in ("mutants", "killed", "survived", "no_tests", "other", "not_checked")} == {
        "mutants": 12,
        "killed": 4,
        "survived": 1,
        "no_tests": 2,
        "other": 2,
        "not_checked": 3,
    }
    assert row["not_checked_by_status"] == {
        "check was interrupted by user": 1,
        "not checked": 1,
        "skipped": 1,
    }
    assert row["kill_rate"] == 44.4 and row["complete"] is False  # 4 killed of the 9 checked
    assert tool.problems(FILE, row) == [
        "mine/rule.py: INCOMPLETE, 3 of 12 mutants not checked "
        "(check was interrupted by user 1, not checked 1, skipped 1)",
        "mine/rule.py: 44.4 % killed, under the floor of 85 %",
    ]
    assert tool.exit_status({FILE: row}) == 1
    assert [(s["name"].removeprefix(PREFIX), s["status"], s["function"]) for s in tool.not_killed(read)] == [
        ("x_mining_video_config__mutmut_6", "no tests", "mining_video_config"),
        ("x_mining_video_config__mutmut_7", "no tests", "mining_video_config"),
        ("x_rule_record__mutmut_5", "survived", "rule_record"),
        ("x_rule_record__mutmut_8", "suspicious", "rule_record"),
        ("x_rule_record__mutmut_9", "segfault", "rule_record"),
    ]


def test_unchecked_mutants_fail_a_run_that_killed_everything_it_checked(tool):
    row = tool.summarize(codes_of(("x_event_windows", 1, 40), ("x_event_windows", None, 1)), 85.0)
    assert row["kill_rate"] == 100.0
    assert tool.problems(FILE, row) == [
        "mine/rule.py: INCOMPLETE, 1 of 41 mutants not checked (not checked 1)"
    ]
    assert tool.exit_status({FILE: row}) == 1


def test_the_floor_decides_a_complete_run(tool):
    at_floor = tool.summarize(
        codes_of(("x_event_windows", 1, 15), ("x_rule_record", 36, 2), ("x_f", 0, 3)), 85.0
    )
    assert at_floor["kill_rate"] == 85.0 and at_floor["complete"]
    assert tool.problems(FILE, at_floor) == [] and tool.exit_status({FILE: at_floor}) == 0
    under = tool.summarize(codes_of(("x_event_windows", 1, 16), ("x_f", 33, 1), ("x_f", 0, 3)), 85.0)
    assert under["kill_rate"] == 80.0
    assert tool.problems("shards/writer.py", under) == [
        "shards/writer.py: 80.0 % killed, under the floor of 85 %"
    ]
    assert tool.exit_status({FILE: at_floor, "shards/writer.py": under}) == 1


def test_no_results_a_failed_mutmut_or_an_interrupt_fail(tool, tmp_path):
    empty = tool.summarize(tool.read_results(tool.meta_path(tmp_path, MODULE)), 85.0)
    assert empty["mutants"] == 0 and not empty["complete"]
    assert tool.problems(FILE, empty) == [
        "mine/rule.py: no mutant results (mutmut generated or checked none)"
    ]
    row = tool.summarize(codes_of(("x_f", 1, 10)), 85.0)
    assert tool.exit_status({FILE: row}) == 0
    assert tool.problems(FILE, {**row, "mutmut_exit": 1}) == ["mine/rule.py: mutmut exited with status 1"]
    assert tool.problems(FILE, {**row, "interrupted": True}) == ["mine/rule.py: interrupted (Ctrl-C)"]
    assert tool.exit_status({FILE: {**row, "interrupted": True}}) == 1


def test_a_rerun_checks_the_mutants_an_interrupt_left(tool, tmp_path, monkeypatch):
    codes = codes_of(("x_f", 1, 2), ("x_f", 2, 1), ("x_f", 34, 1), ("x_f", None, 1), ("x_f", 0, 1))
    build = write_meta(tmp_path / "build", codes, monkeypatch)
    meta = tool.meta_path(build, MODULE)
    assert tool.reset_interrupted(meta) == 2
    again = SourceFileMutationData(path="src/maskahand/mine/rule.py")
    again.load()  # mutmut still reads it (it refuses unknown keys)
    assert list(again.exit_code_by_key.values()) == [1, 1, None, None, None, 0]
    assert again.durations_by_key == {f"{PREFIX}x_f__mutmut_{i}": 0.1 for i in (1, 2, 3, 4, 6)}
    assert tool.reset_interrupted(meta) == 0


SOURCE = '''\
import os


def double(x):
    """Twice x."""
    y = x * 2
    return y


class Box:
    @staticmethod
    def size(a, b):
        return a - b
'''


def test_survivors_are_located_from_mutmuts_own_diffs(tool, tmp_path):
    """mutmut mutates a small module for real and renders each diff as ``mutmut show`` does."""
    (tmp_path / "src" / "pkg").mkdir(parents=True)
    (tmp_path / "src" / "pkg" / "mod.py").write_text(SOURCE)
    (tmp_path / "pyproject.toml").write_text('[tool.mutmut]\nsource_paths = ["src/pkg"]\n')
    script = textwrap.dedent(
        """
        import json
        from mutmut.mutation.diff_apply import get_diff_for_mutant
        from mutmut.mutation.file_mutation import mutate_file_contents
        source = open("src/pkg/mod.py").read()
        mutated = mutate_file_contents("src/pkg/mod.py", source)
        names = ["pkg.mod." + name for name in mutated.mutant_names]
        print(json.dumps({n: get_diff_for_mutant(n, source=mutated.code, path="src/pkg/mod.py") for n in names}))
        """
    )
    run = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    diffs = json.loads(run.stdout)
    assert len(diffs) >= 4
    located = {}
    for name, diff in diffs.items():
        row = {"name": name, "status": "survived", "function": tool.function_of(name), "diff": diff}
        located.setdefault(row["function"], set()).add(tool.locate(row, SOURCE, "pkg/mod.py"))
    # every mutant of double changes `y = x * 2` (line 6); of Box.size (a decorated method), line 13
    assert located == {"double": {"pkg/mod.py:6"}, "Box.size": {"pkg/mod.py:13"}}
    row["location"] = tool.locate(row, SOURCE, "pkg/mod.py")
    text = tool.report(
        {
            FILE: {**tool.summarize({n: 0 for n in diffs}, 85.0), "survivors": [row]},
            "x.py": tool.summarize({}, 85),
        },
        {FILE},
    )
    assert row["name"] in text and "* figures of an earlier run" in text
    assert (
        f"  {row['name']}  [survived]  pkg/mod.py:13\n      -    return a - b\n      +    return a + b"
        in text
    )


def test_function_names_and_lines(tool):
    assert (
        tool.function_of(f"{PREFIX}xǁStreamingClipSelectorǁ__init____mutmut_10")
        == "StreamingClipSelector.__init__"
    )
    assert tool.function_of(f"{PREFIX}x_event_windows__mutmut_2") == "event_windows"
    assert tool.function_line(SOURCE, "double") == 4
    assert tool.function_line(SOURCE, "Box.size") == 11  # its decorator
    assert tool.function_line(SOURCE, "Box.missing") is None and tool.function_line(SOURCE, "size") is None
    row = {"function": "gone", "diff": ""}
    assert tool.locate(row, SOURCE, "pkg/mod.py") == "pkg/mod.py (gone)"


def make_repo(
    root: Path, package_dir: dict[str, str], packages: list[str], folders: dict[str, list[str]]
) -> dict:
    root.mkdir(parents=True, exist_ok=True)
    for folder, files in folders.items():
        for name in files:
            (root / folder / name).parent.mkdir(parents=True, exist_ok=True)
            (root / folder / name).write_text(f"# {folder}/{name}\n")
    lines = ["[tool.setuptools]", f"packages = {json.dumps(packages)}", "[tool.setuptools.package-dir]"]
    lines += [f'"{k}" = "{v}"' for k, v in package_dir.items()]
    lines += ["[tool.mutmut]", 'source_paths = ["src/maskahand"]']
    (root / "pyproject.toml").write_text("\n".join(lines) + "\n")
    return tomllib.loads((root / "pyproject.toml").read_text())


def staged(build: Path) -> list[str]:
    return sorted(str(p.relative_to(build)) for p in build.rglob("*") if p.is_file())


COMMON = {"tests": ["test_x.py"], "benchmarks": ["b.py"], ".venv": ["big.bin"], "outputs": ["o.pt"]}
COMMON |= {"runs": ["r.log"], "build": ["old.txt"], ".git": ["HEAD"], "docs": ["d.md"]}


def test_staging_with_todays_mapping(tool, tmp_path):
    root = tmp_path / "repo"
    project = make_repo(
        root,
        {"maskahand": "core", "maskahand.mine": "mine"},
        ["maskahand", "maskahand.mine"],
        {**COMMON, "core": ["__init__.py", "config.py"], "mine": ["__init__.py", "rule.py"]},
    )
    build = tmp_path / "stage"
    tool.stage(project, FILE, ["tests/test_x.py"], build, root=root)
    assert staged(build) == [
        "benchmarks/b.py",
        "pyproject.toml",
        "src/maskahand/__init__.py",
        "src/maskahand/config.py",
        "src/maskahand/mine/__init__.py",
        "src/maskahand/mine/rule.py",
        "tests/test_x.py",
    ]
    assert tool.module_name(project, "core/config.py") == "maskahand.config"  # core/ is the root package
    assert tool.module_name(project, FILE) == MODULE
    config = tomllib.loads((build / "pyproject.toml").read_text())["tool"]["mutmut"]
    assert config["only_mutate"] == ["src/maskahand/mine/rule.py"]
    assert config["pytest_add_cli_args_test_selection"] == ["tests/test_x.py"]


def test_staging_with_the_root_as_the_package(tool, tmp_path):
    """package-dir {"maskahand": "."}: the root's own files, the listed sub-packages, nothing else."""
    root = tmp_path / "repo"
    folders = {**COMMON, ".": ["__init__.py", "cli.py"], "core": ["__init__.py", "config.py"]}
    folders |= {"mine": ["__init__.py", "rule.py"], "unlisted": ["__init__.py", "x.py"]}
    project = make_repo(root, {"maskahand": "."}, ["maskahand", "maskahand.core", "maskahand.mine"], folders)
    build = tmp_path / "stage"
    tool.stage(project, FILE, ["tests/test_x.py"], build, root=root)
    assert staged(build) == [
        "benchmarks/b.py",
        "pyproject.toml",
        "src/maskahand/__init__.py",
        "src/maskahand/cli.py",
        "src/maskahand/core/__init__.py",
        "src/maskahand/core/config.py",
        "src/maskahand/mine/__init__.py",
        "src/maskahand/mine/rule.py",
        "src/maskahand/pyproject.toml",  # a file of the root package's folder
        "tests/test_x.py",
    ]
    assert tool.module_name(project, "core/config.py") == "maskahand.core.config"
    assert tool.module_name(project, "cli.py") == "maskahand.cli"
    with pytest.raises(SystemExit, match="video/io.py is not in the folder of any package"):
        tool.stage(project, "video/io.py", [], build, root=root)
    bad = make_repo(tmp_path / "bad", {"maskahand": ".venv/lib"}, ["maskahand"], {})
    with pytest.raises(SystemExit, match=r"maps to \.venv/lib, which is never staged"):
        tool.package_folders(bad)


def test_the_floor_and_modules_come_from_pyproject(tool):
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    floor, modules = tool.mutate_settings(project)
    assert floor == 85.0 and FILE in modules and all(isinstance(t, list) for t in modules.values())
    for value in (None, 120, "85", True):
        table = {"tool": {"maskahand": {"mutate": {"floor": value, "modules": modules}}}}
        with pytest.raises(SystemExit, match=r"\[tool.maskahand.mutate\]: floor = .*expected a percentage"):
            tool.mutate_settings(table)
    with pytest.raises(SystemExit, match="lists no module"):
        tool.mutate_settings({"tool": {"maskahand": {"mutate": {"floor": 85}}}})
