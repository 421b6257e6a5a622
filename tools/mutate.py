"""``make mutate``: mutation testing (mutmut 3) of the modules where a silent change costs users most.

mutmut names a mutant after its file path (``mine/rule.py`` -> ``mine.rule``) and only activates it when
that name equals the running function's ``__module__``. Our folders are installed under other names
(``mine/`` is ``maskahand.mine``), so mutmut cannot run on the repository as it is. For each module this
script lays the packages out as ``BUILD/<module>/src/maskahand/...`` (the mapping in ``pyproject.toml``'s
``[tool.setuptools.package-dir]``), copies ``tests/``, ``benchmarks/`` and ``pyproject.toml`` beside them
and runs ``mutmut run`` there: mutmut strips the ``src.`` prefix (module ``maskahand.mine.rule``) and puts
``mutants/src`` first on ``sys.path``, ahead of the editable install's import hook.

``[tool.mutmut]`` in ``pyproject.toml`` holds the shared settings, ``[tool.maskahand.mutate]`` the modules
and, per module, the fast tests that exercise it (written into that module's copy as mutmut's
``only_mutate`` / ``pytest_add_cli_args_test_selection``). One module runs at a time, each in its own
folder (a change of test selection would reset mutmut's results of the others). The kill rate per module
is printed and merged into ``BUILD/mutation.json`` (a ``--module`` run keeps the other modules' figures). Usage::

    python tools/mutate.py [--build build/mutate] [--children 1] [--module mine/rule.py ...]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import tomllib

ROOT = Path(__file__).resolve().parents[1]
KILLED = {1, 3, 24, -24, 36, 37, 152, 255}  # a test failed, a timeout, or the type checker
NOT_RUN = {None, 2, 34}  # not checked, interrupted, skipped


def module_name(file: str) -> str:
    return "maskahand." + file.removesuffix(".py").replace("/", ".")


def stage(project: dict[str, Any], file: str, tests: list[str], build: Path) -> None:
    """A copy of the project with the installed package layout, configured to mutate ``file`` only."""
    if build.exists():
        shutil.rmtree(build)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for package, folder in sorted(project["tool"]["setuptools"]["package-dir"].items()):
        shutil.copytree(
            ROOT / folder, build / "src" / Path(*package.split(".")), ignore=ignore, dirs_exist_ok=True
        )
    for folder in ("tests", "benchmarks"):
        shutil.copytree(ROOT / folder, build / folder, ignore=ignore)
    target = str(Path("src") / Path(*module_name(file).split("."))) + ".py"
    text = (ROOT / "pyproject.toml").read_text()
    header = "[tool.mutmut]\n"
    if text.count(header) != 1:
        raise SystemExit("pyproject.toml: expected one [tool.mutmut] table")
    own = f"only_mutate = {json.dumps([target])}\npytest_add_cli_args_test_selection = {json.dumps(tests)}\n"
    (build / "pyproject.toml").write_text(text.replace(header, header + own))


def summarize(build: Path, file: str) -> dict[str, Any]:
    meta = build / "mutants" / "src" / (module_name(file).replace(".", "/") + ".py.meta")
    codes = list(json.loads(meta.read_text())["exit_code_by_key"].values()) if meta.is_file() else []
    tried = [c for c in codes if c not in NOT_RUN]
    killed = sum(c in KILLED for c in tried)
    return {
        "mutants": len(codes),
        "killed": killed,
        "survived": sum(c == 0 for c in tried),
        "no_tests": sum(c in (5, 33) for c in tried),
        "other": len(tried) - killed - sum(c in (0, 5, 33) for c in tried),
        "kill_rate": round(100.0 * killed / len(tried), 1) if tried else 0.0,
    }


def merge_summary(path: Path, rows: dict[str, Any]) -> dict[str, Any]:
    """Update ``path`` with this run's modules, keeping the figures of modules it did not run (``--module``);
    written atomically. Returns every module's figures."""
    merged: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}
    merged.update(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(merged, indent=2) + "\n")
    os.replace(tmp, path)
    return merged


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--build", type=Path, default=ROOT / "build" / "mutate")
    parser.add_argument("--children", type=int, default=1, help="mutants tested in parallel (default 1)")
    parser.add_argument("--module", action="append", help="only these files, e.g. mine/rule.py")
    parser.add_argument("--keep", action="store_true", help="reuse an existing copy (mutmut's cache)")
    parser.add_argument("--shared", type=Path, help="the example data (default ../shared/data)")
    args = parser.parse_args(argv)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    targets: dict[str, list[str]] = project["tool"]["maskahand"]["mutate"]
    if args.module:
        unknown = set(args.module) - set(targets)
        if unknown:
            raise SystemExit(f"not in [tool.maskahand.mutate]: {sorted(unknown)}")
        targets = {f: t for f, t in targets.items() if f in args.module}
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    # the tests look for ../shared/data next to the repository, not next to the copy
    shared = args.shared or Path(os.environ.get("MASKAHAND_SHARED_DATA", ROOT.parent / "shared" / "data"))
    env["MASKAHAND_SHARED_DATA"] = str((ROOT / shared).resolve())
    mutmut = str(Path(sys.executable).with_name("mutmut"))
    rows = {}
    for file, tests in targets.items():
        build = (args.build / file.removesuffix(".py").replace("/", ".")).resolve()
        if not (args.keep and build.is_dir()):
            stage(project, file, tests, build)
        print(f"== mutmut {module_name(file)} (tests: {' '.join(tests)})", flush=True)
        cmd = [mutmut, "run", "--max-children", str(args.children)]
        subprocess.run(cmd, cwd=build, env=env, check=False)
        rows[file] = summarize(build, file)
        print(f"   {rows[file]}", flush=True)
    rows = merge_summary(args.build / "mutation.json", rows)
    print(f"\n{'module':22s} {'mutants':>8s} {'killed':>7s} {'survived':>9s} {'no tests':>9s} {'kill %':>7s}")
    for file, r in rows.items():
        print(
            f"{file:22s} {r['mutants']:8d} {r['killed']:7d} {r['survived']:9d} {r['no_tests']:9d} "
            f"{r['kill_rate']:7.1f}"
        )
    print(f"survivors: cd {args.build}/<module> && {mutmut} results; {mutmut} show NAME")
    return 0


if __name__ == "__main__":
    sys.exit(main())
