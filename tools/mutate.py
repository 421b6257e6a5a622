"""``make mutate``: mutation testing (mutmut 3) of the modules where a silent change costs users most.

mutmut names a mutant after its file path (``mine/rule.py`` -> ``mine.rule``) and only activates it when
that name equals the running function's ``__module__``. Our folders are installed under other names
(``mine/`` is ``maskahand.mine``), so mutmut cannot run on the repository as it is. For each module this
script lays the packages out as ``BUILD/<module>/src/maskahand/...``: each package of ``[tool.setuptools]
packages`` gets the files of its folder (``[tool.setuptools.package-dir]``, longest prefix, as setuptools
resolves it; only files, so a package mapped to the repository root never drags in ``.venv`` or
``outputs``). ``tests/``, ``benchmarks/`` and ``pyproject.toml`` are copied beside them and ``mutmut run``
runs there: mutmut strips the ``src.`` prefix (module ``maskahand.mine.rule``) and puts ``mutants/src``
first on ``sys.path``, ahead of the editable install's import hook.

``[tool.mutmut]`` in ``pyproject.toml`` holds the shared settings; ``[tool.maskahand.mutate]`` the kill-rate
``floor`` (%) and, in ``.modules``, the modules with the fast tests that exercise each (written into that
module's copy as mutmut's ``only_mutate`` / ``pytest_add_cli_args_test_selection``). One module runs at a
time, each in its own folder (a change of test selection would reset mutmut's results of the others).

Afterwards the tool reads mutmut's results (``mutants/<file>.meta``), and for each module prints and merges
into ``BUILD/mutation.json`` (a ``--module`` run keeps the other modules' figures): the counts, the kill rate
(killed + timed out + caught by the type check, over the mutants checked), and every mutant not killed
(survived, no test reaches it, suspicious) with its function, its line and mutmut's diff. It exits 1 when a
module has mutants left unchecked (not checked, interrupted, skipped), no mutants at all, a failed mutmut,
or a kill rate under the floor, naming the module and why. Usage::

    python tools/mutate.py [--build build/mutate] [--children 1] [--module mine/rule.py ...]
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import tomllib
from mutmut.stats import status_by_exit_code  # mutmut's own exit code -> status table

ROOT = Path(__file__).resolve().parents[1]
KILLED = {"killed", "timeout", "caught by type check"}
NOT_CHECKED = {"not checked", "check was interrupted by user", "skipped"}  # the run is incomplete
NO_TESTS = {"no tests"}  # no selected test calls the function: counts against the kill rate
# any other status (survived, suspicious, segfault) was checked and not killed
NEVER_STAGED = {".venv", "outputs", "runs", "build", ".git"}  # refused as (part of) a package folder
SEPARATOR = "ǁ"  # mutmut's class/method separator in mangled names: xǁClassǁmethod__mutmut_3


def module_name(project: dict[str, Any], file: str) -> str:
    """The installed module of a repository file: ``mine/rule.py`` -> ``maskahand.mine.rule`` (through the
    package whose folder holds it, so ``core/config.py`` is ``maskahand.core.config`` while ``core/`` is the root
    package, and ``maskahand.core.config`` once the root folder is)."""
    path = Path(file)
    for package, folder in package_folders(project).items():
        if folder == path.parent:
            return f"{package}.{path.stem}"
    raise SystemExit(f"[tool.maskahand.mutate.modules]: {file} is not in the folder of any package")


# -- configuration --


def mutate_settings(project: dict[str, Any]) -> tuple[float, dict[str, list[str]]]:
    """(floor %, module file -> its pytest arguments) from ``[tool.maskahand.mutate]``."""
    table = project.get("tool", {}).get("maskahand", {}).get("mutate", {})
    floor, modules = table.get("floor"), table.get("modules")
    if not isinstance(floor, int | float) or isinstance(floor, bool) or not 0 <= floor <= 100:
        raise SystemExit(f"pyproject.toml [tool.maskahand.mutate]: floor = {floor!r}, expected a percentage")
    if not isinstance(modules, dict) or not modules:
        raise SystemExit("pyproject.toml: [tool.maskahand.mutate.modules] lists no module")
    return float(floor), modules


def package_folders(project: dict[str, Any]) -> dict[str, Path]:
    """Each package of ``[tool.setuptools] packages`` -> its source folder (relative to the repository), by
    the longest ``package-dir`` prefix, as setuptools maps it."""
    setup = project["tool"]["setuptools"]
    mapping: dict[str, str] = setup.get("package-dir", {})
    folders = {}
    for package in setup["packages"]:
        parts = package.split(".")
        for n in range(len(parts), -1, -1):
            prefix = ".".join(parts[:n])
            if prefix in mapping:
                folders[package] = Path(mapping[prefix], *parts[n:])
                break
        else:
            folders[package] = Path(*parts)
        if NEVER_STAGED & set(folders[package].parts):
            raise SystemExit(
                f"pyproject.toml: package {package} maps to {folders[package]}, which is never staged"
            )
    return folders


def stage(project: dict[str, Any], file: str, tests: list[str], build: Path, root: Path = ROOT) -> None:
    """A copy of the project with the installed package layout, configured to mutate ``file`` only."""
    if build.exists():
        shutil.rmtree(build)
    for package, folder in sorted(package_folders(project).items()):
        target = build / "src" / Path(*package.split("."))
        target.mkdir(parents=True, exist_ok=True)
        for path in sorted((root / folder).iterdir()):  # files only: sub-packages are packages of their own
            if path.is_file() and path.suffix != ".pyc":
                shutil.copy2(path, target / path.name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for folder in ("tests", "benchmarks"):
        shutil.copytree(root / folder, build / folder, ignore=ignore)
    target = str(Path("src") / Path(*module_name(project, file).split("."))) + ".py"
    if not (build / target).is_file():
        raise SystemExit(f"[tool.maskahand.mutate.modules]: {file} is not a file of any package ({target})")
    text = (root / "pyproject.toml").read_text()
    header = "[tool.mutmut]\n"
    if text.count(header) != 1:
        raise SystemExit("pyproject.toml: expected one [tool.mutmut] table")
    own = f"only_mutate = {json.dumps([target])}\npytest_add_cli_args_test_selection = {json.dumps(tests)}\n"
    (build / "pyproject.toml").write_text(text.replace(header, header + own))


# -- results --


def meta_path(build: Path, module: str) -> Path:
    """mutmut's result file of ``module`` (``maskahand.mine.rule``) in a staged copy."""
    return build / "mutants" / "src" / (module.replace(".", "/") + ".py.meta")


def read_results(meta: Path) -> dict[str, int | None]:
    """mutmut's ``exit_code_by_key`` (mutant name -> exit code, None when not checked); {} without a file."""
    if not meta.is_file():
        return {}
    return dict(json.loads(meta.read_text())["exit_code_by_key"])


def status(code: int | None) -> str:
    return status_by_exit_code[code]


def summarize(codes: dict[str, int | None], floor: float) -> dict[str, Any]:
    """Counts per outcome, the kill rate over the mutants checked, and whether the run was complete."""
    statuses = [status(c) for c in codes.values()]
    unchecked = {s: statuses.count(s) for s in sorted(NOT_CHECKED) if s in statuses}
    killed = sum(s in KILLED for s in statuses)
    tried = len(statuses) - sum(unchecked.values())
    survived = statuses.count("survived")
    no_tests = sum(s in NO_TESTS for s in statuses)
    kill_rate = round(100.0 * killed / tried, 1) if tried else 0.0
    return {
        "mutants": len(statuses),
        "killed": killed,
        "survived": survived,
        "no_tests": no_tests,
        "other": tried - killed - survived - no_tests,  # suspicious, segfault
        "not_checked": sum(unchecked.values()),
        "not_checked_by_status": unchecked,
        "kill_rate": kill_rate,
        "floor": floor,
        "complete": bool(statuses) and not unchecked,
    }


def function_of(mutant: str) -> str:
    """``maskahand.mine.rule.xǁStreamingClipSelectorǁpush__mutmut_3`` -> ``StreamingClipSelector.push``."""
    mangled = mutant.partition("__mutmut_")[0].rpartition(".")[2]
    if mangled.startswith("x" + SEPARATOR):
        _, cls, name = mangled.split(SEPARATOR)
        return f"{cls}.{name}"
    return mangled.removeprefix("x_")


def not_killed(codes: dict[str, int | None]) -> list[dict[str, str]]:
    """The mutants checked and not killed, by name: what a reader must look at."""
    rows = []
    for name, code in sorted(codes.items()):
        if status(code) not in KILLED | NOT_CHECKED:
            rows.append({"name": name, "status": status(code), "function": function_of(name)})
    return rows


def function_line(source: str, function: str) -> int | None:
    """The first line (decorators included) of ``function`` (``name`` or ``Class.name``) in ``source``."""
    path = function.split(".")
    body: list[ast.stmt] = ast.parse(source).body
    for i, part in enumerate(path):
        last = i == len(path) - 1
        for node in body:
            if getattr(node, "name", None) != part:
                continue
            if last and isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                return min([node.lineno, *(d.lineno for d in node.decorator_list)])
            if not last and isinstance(node, ast.ClassDef):
                body = node.body
                break
        else:
            return None
    return None


def first_changed_line(diff: str) -> int | None:
    """The 1-based line, within the function's text, of the first line a unified diff removes."""
    line = None
    for text in diff.splitlines():
        hunk = re.match(r"@@ -(\d+)", text)
        if hunk:
            line = int(hunk.group(1))
        elif line is not None and not text.startswith(("---", "+++")):
            if text.startswith("-"):
                return line
            if not text.startswith("+"):
                line += 1
    return None


def locate(row: dict[str, str], source: str, file: str) -> str:
    """``file:line`` of a mutant (the function's first line plus the diff's offset), or ``file (function)``."""
    start = function_line(source, row["function"])
    offset = first_changed_line(row.get("diff", ""))
    if start is None:
        return f"{file} ({row['function']})"
    return f"{file}:{start + (offset or 1) - 1}"


DIFFS = """
import json, sys
from mutmut.mutation.diff_apply import get_diff_for_mutant
out = {}
for name in sys.argv[1:]:
    try:
        out[name] = get_diff_for_mutant(name)
    except Exception as error:  # one mutant's diff failing must not hide the others
        out[name] = f"(no diff: {type(error).__name__}: {error})"
print(json.dumps(out))
"""


def mutant_diffs(build: Path, names: list[str], env: dict[str, str]) -> dict[str, str]:
    """mutmut's diff of each mutant (what ``mutmut show NAME`` prints), in one process."""
    if not names:
        return {}
    run = subprocess.run(
        [sys.executable, "-c", DIFFS, *names], cwd=build, env=env, capture_output=True, text=True, check=False
    )
    if run.returncode != 0:
        return {
            name: f"(no diff: mutmut exited {run.returncode}: {run.stderr.strip()[-300:]})" for name in names
        }
    return json.loads(run.stdout.strip().splitlines()[-1])


def problems(file: str, row: dict[str, Any]) -> list[str]:
    """Why ``row`` (one module's figures) fails ``make mutate``; [] when it passes."""
    out = []
    if row.get("interrupted"):
        out.append(f"{file}: interrupted (Ctrl-C)")
    if row.get("mutmut_exit", 0) != 0:
        out.append(f"{file}: mutmut exited with status {row['mutmut_exit']}")
    if row["mutants"] == 0:
        out.append(f"{file}: no mutant results (mutmut generated or checked none)")
        return out
    if not row["complete"]:
        why = ", ".join(f"{s} {n}" for s, n in row["not_checked_by_status"].items())
        out.append(
            f"{file}: INCOMPLETE, {row['not_checked']} of {row['mutants']} mutants not checked ({why})"
        )
    if row["kill_rate"] < row["floor"]:
        out.append(f"{file}: {row['kill_rate']:.1f} % killed, under the floor of {row['floor']:g} %")
    return out


def exit_status(rows: dict[str, dict[str, Any]]) -> int:
    return 1 if any(problems(file, row) for file, row in rows.items()) else 0


def merge_summary(path: Path, rows: dict[str, Any]) -> dict[str, Any]:
    """Update ``path`` with this run's modules, keeping the figures of modules it did not run (``--module``);
    written atomically. Returns every module's figures."""
    merged: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}
    merged.update(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(merged, indent=2, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
    return merged


def report(rows: dict[str, dict[str, Any]], ran: set[str]) -> str:
    """The table of every module's figures (``*``: not run now) and this run's mutants not killed."""
    lines = [
        f"{'module':24s} {'mutants':>8s} {'killed':>7s} {'survived':>9s} {'no tests':>9s} {'unchecked':>10s} "
        f"{'kill %':>7s} {'floor':>6s}"
    ]
    for file, r in rows.items():
        mark = "" if file in ran else " *"
        lines.append(
            f"{file + mark:24s} {r['mutants']:8d} {r['killed']:7d} {r['survived']:9d} {r['no_tests']:9d} "
            f"{r.get('not_checked', 0):10d} {r['kill_rate']:7.1f} {r.get('floor', 0.0):6g}"
        )
    if ran != set(rows):
        lines.append("* figures of an earlier run (not run now)")
    for file in sorted(ran):
        survivors = rows[file].get("survivors", [])
        if survivors:
            lines.append(f"\n{file}: {len(survivors)} mutants not killed")
        for s in survivors:
            lines.append(f"  {s['name']}  [{s['status']}]  {s.get('location', '')}")
            diff = s.get("diff", "").splitlines()
            lines.extend(
                f"      {t}" for t in diff if t.startswith(("-", "+")) and not t.startswith(("---", "+++"))
            )
    return "\n".join(lines)


def run_mutmut(cmd: list[str], build: Path, env: dict[str, str]) -> tuple[int, bool]:
    """(mutmut's exit status, whether it was interrupted). Ctrl-C reaches mutmut too (one process group):
    it stops its workers and keeps the results it has, so wait for it rather than kill it."""
    proc = subprocess.Popen(cmd, cwd=build, env=env)
    try:
        return proc.wait(), False
    except KeyboardInterrupt:
        try:
            return proc.wait(timeout=120), True
        except (subprocess.TimeoutExpired, KeyboardInterrupt):
            proc.kill()
            return proc.wait(), True


def reset_interrupted(meta: Path) -> int:
    """Mark the mutants an earlier run left interrupted or skipped as unchecked (``null``), so that a
    ``--keep`` rerun checks them: mutmut reruns only mutants without a result. Returns how many."""
    if not meta.is_file():
        return 0
    data = json.loads(meta.read_text())
    codes = data["exit_code_by_key"]
    names = [name for name, code in codes.items() if code is not None and status(code) in NOT_CHECKED]
    for name in names:
        codes[name] = None
    if names:
        tmp = meta.with_name(meta.name + ".tmp")
        tmp.write_text(json.dumps(data, indent=4))
        os.replace(tmp, meta)
    return len(names)


def run_module(
    file: str, module: str, tests: list[str], floor: float, build: Path, env: dict[str, str], children: int
) -> tuple[dict, bool]:
    """Run mutmut on one staged module; (its figures and mutants not killed, whether it was interrupted)."""
    print(f"== mutmut {module} (tests: {' '.join(tests)})", flush=True)
    again = reset_interrupted(meta_path(build, module))
    if again:
        print(f"   {again} mutants an earlier run left unchecked are checked now", flush=True)
    cmd = [sys.executable, "-m", "mutmut", "run", "--max-children", str(children)]
    rc, interrupted = run_mutmut(cmd, build, env)
    codes = read_results(meta_path(build, module))
    row = summarize(codes, floor)
    row["mutmut_exit"] = rc
    row["interrupted"] = interrupted
    survivors = not_killed(codes)
    diffs = mutant_diffs(build, [s["name"] for s in survivors], env)
    source = (ROOT / file).read_text()
    for s in survivors:
        s["diff"] = diffs.get(s["name"], "")
        s["location"] = locate(s, source, file)
    row["survivors"] = survivors
    return row, interrupted


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--build", type=Path, default=ROOT / "build" / "mutate")
    parser.add_argument("--children", type=int, default=1, help="mutants tested in parallel (default 1)")
    parser.add_argument("--module", action="append", help="only these files, e.g. mine/rule.py")
    parser.add_argument("--keep", action="store_true", help="reuse an existing copy (mutmut's cache)")
    parser.add_argument("--shared", type=Path, help="the example data (default ../shared/data)")
    args = parser.parse_args(argv)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    floor, targets = mutate_settings(project)
    if args.module:
        unknown = set(args.module) - set(targets)
        if unknown:
            raise SystemExit(f"not in [tool.maskahand.mutate.modules]: {sorted(unknown)}")
        targets = {f: t for f, t in targets.items() if f in args.module}
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    # the tests look for ../shared/data next to the repository, not next to the copy
    shared = args.shared or Path(os.environ.get("MASKAHAND_SHARED_DATA", ROOT.parent / "shared" / "data"))
    env["MASKAHAND_SHARED_DATA"] = str((ROOT / shared).resolve())
    rows = {}
    for file, tests in targets.items():
        build = (args.build / file.removesuffix(".py").replace("/", ".")).resolve()
        if not (args.keep and build.is_dir()):
            stage(project, file, tests, build)
        module = module_name(project, file)
        rows[file], interrupted = run_module(file, module, tests, floor, build, env, args.children)
        if interrupted:
            left = [f for f in targets if f not in rows]
            if left:
                print(f"interrupted: not run {', '.join(left)}", file=sys.stderr)
            break
    merged = merge_summary(args.build / "mutation.json", rows)
    print("\n" + report(merged, set(rows)))
    print(f"\nfigures and every survivor's diff: {args.build / 'mutation.json'}")
    failed = [line for file, row in rows.items() for line in problems(file, row)]
    for line in failed:
        print(f"FAIL {line}", file=sys.stderr)
    if not failed:
        print(f"every module checked completely and at or over its floor ({floor:g} %)")
    return exit_status(rows)


if __name__ == "__main__":
    sys.exit(main())
