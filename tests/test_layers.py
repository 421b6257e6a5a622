"""The package's structure, as tools see it: layers import-linter enforces (``make lint``), imports that
resolve by file path, and imports inside functions only where a comment says why (docs/ARCHITECTURE.md)."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PACKAGES = PYPROJECT["tool"]["setuptools"]["packages"]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def folder(package: str) -> Path:
    return ROOT.joinpath(*package.split(".")[1:])


def package_files() -> list[Path]:
    files = [ROOT / "__init__.py"]
    for package in PACKAGES:
        if package != "maskahand":
            files += sorted(folder(package).glob("*.py"))
    return files


def parsed(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def top_level_names(path: Path) -> set[str]:
    """Names a module defines or imports at its top (and the lazy exports of a package ``__init__``)."""
    names: set[str] = set()
    for node in ast.walk(parsed(path)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                names |= {n.id for n in ast.walk(target) if isinstance(n, ast.Name)}
    return names


def test_every_installed_folder_is_listed_and_checked():
    assert len(package_files()) > 100
    assert {p.parent.name for p in ROOT.glob("*/__init__.py")} - {"benchmarks"} == {
        p.removeprefix("maskahand.") for p in PACKAGES if p != "maskahand"
    }


def test_package_code_imports_itself_relatively():
    absolute = [
        f"{path.relative_to(ROOT)}:{node.lineno}"
        for path in package_files()
        for node in ast.walk(parsed(path))
        if (
            isinstance(node, ast.ImportFrom)
            and node.level == 0
            and (node.module or "").split(".")[0] == "maskahand"
        )
        or (isinstance(node, ast.Import) and any(a.name.split(".")[0] == "maskahand" for a in node.names))
    ]
    assert absolute == []


def test_every_relative_import_lands_on_a_file_by_path():
    """What an editor or a path-based tool does: ``..core.fsutil`` from ``mine/x.py`` is ``core/fsutil.py``."""
    unresolved = []
    for path in package_files():
        for node in ast.walk(parsed(path)):
            if not (isinstance(node, ast.ImportFrom) and node.level > 0):
                continue
            base = path.parent
            for _ in range(node.level - 1):
                base = base.parent
            target = base.joinpath(*(node.module or "").split(".")) if node.module else base
            module_file = target.with_suffix(".py") if node.module else None
            if module_file is not None and module_file.exists():
                names = top_level_names(module_file)
                missing = [a.name for a in node.names if a.name != "*" and a.name not in names]
            elif (target / "__init__.py").exists():
                names = top_level_names(target / "__init__.py")
                missing = [
                    a.name
                    for a in node.names
                    if a.name not in names and not (target / f"{a.name}.py").exists()
                ]
            else:
                missing = [node.module or "."]
            if missing:
                unresolved.append(f"{path.relative_to(ROOT)}:{node.lineno}: {missing}")
    assert unresolved == []


def test_imports_inside_functions_say_why():
    """An import inside a function (or a run of them) follows a ``# deferred: REASON`` line."""
    silent = []
    for path in package_files():
        lines = path.read_text().splitlines()
        tree = parsed(path)
        import_lines = {
            n: node
            for node in ast.walk(tree)
            if isinstance(node, (ast.Import, ast.ImportFrom))
            for n in range(node.lineno, (node.end_lineno or node.lineno) + 1)
        }
        for func in ast.walk(tree):
            if not isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(func):
                if not isinstance(node, (ast.Import, ast.ImportFrom)):
                    continue
                above = node.lineno - 1
                while above in import_lines:  # the run of imports this one belongs to
                    above = import_lines[above].lineno - 1
                if not lines[above - 1].strip().startswith("# deferred: "):
                    silent.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert sorted(set(silent)) == []


def run_lint_imports(src: Path, config: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(src))
    return subprocess.run(
        [str(LINT_IMPORTS), str(config), "--no-cache"],
        capture_output=True,
        text=True,
        env=env,
        cwd=src,
        timeout=300,
    )


@pytest.fixture(scope="module")
def copy_of_the_package(tmp_path_factory):
    """The package's modules under ``src/maskahand`` (what import-linter reads), for one edge added on purpose."""
    src = tmp_path_factory.mktemp("layers") / "src"
    for path in [*package_files(), *(ROOT / "benchmarks").glob("*.py")]:
        dest = src / "maskahand" / path.relative_to(ROOT)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, dest)
    shutil.copy(ROOT / "pyproject.toml", src / "pyproject.toml")
    return src


def test_the_repository_keeps_its_layers(copy_of_the_package):
    out = run_lint_imports(copy_of_the_package, copy_of_the_package / "pyproject.toml")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Contracts: 3 kept, 0 broken." in out.stdout


@pytest.mark.parametrize(
    ("module", "line", "contract", "edge"),
    [
        (
            "core/fsutil.py",
            "from ..mine import rule",
            "Layers",
            "maskahand.core.fsutil -> maskahand.mine.rule",
        ),
        (
            "runtime/__init__.py",
            "from ..afformer import model",
            "Layers",
            "maskahand.runtime -> maskahand.afformer.model",
        ),
        (
            "mine/rule.py",
            "from ..synth import recipe",
            "Layers",
            "maskahand.mine.rule -> maskahand.synth.recipe",
        ),
        (
            "evaluation/metrics.py",
            "from ..trainer import engine",
            "Evaluation never imports training",
            "maskahand.trainer",
        ),
        ("shards/writer.py", "import benchmarks.mine", "No package imports", "benchmarks"),
    ],
)
def test_a_back_edge_breaks_the_lint(copy_of_the_package, module, line, contract, edge):
    target = copy_of_the_package / "maskahand" / module
    original = target.read_text()
    try:
        target.write_text(original + f"\n{line}  # a deliberate back edge\n")
        out = run_lint_imports(copy_of_the_package, copy_of_the_package / "pyproject.toml")
    finally:
        target.write_text(original)
    assert out.returncode != 0
    broken = out.stdout.split("Broken contracts", 1)[1]
    assert contract in broken and edge in broken, out.stdout
