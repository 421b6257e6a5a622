"""Run mypy over the ``maskahand`` package despite its folder-to-package mapping.

The editable install (``pip install -e .``) maps ``core/`` to ``maskahand``, ``video/`` to
``maskahand.video``, ... with an import hook that static tools cannot see. This script builds a tree of
symlinks with the installed layout (``.mypy_cache/tree/maskahand/...``, rebuilt on every run, so new
modules are picked up), runs mypy on it with the ``[tool.mypy]`` settings of ``pyproject.toml``, and
prints mypy's report with the repository's own paths (``video/reader.py:12: error: ...``).

    python tools/typecheck.py              # what `make lint` runs; exit status is mypy's
    python tools/typecheck.py -- --strict  # extra mypy options after --
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TREE = ROOT / ".mypy_cache" / "tree"


def package_dirs(pyproject: Path = ROOT / "pyproject.toml") -> dict[str, Path]:
    """Package name -> its folder, from the ``"name" = "folder"`` lines of ``[tool.setuptools.package-dir]``.

    (A line parser rather than tomllib, which Python 3.10 lacks.)
    """
    section = pyproject.read_text().split("[tool.setuptools.package-dir]", 1)[1].split("\n[", 1)[0]
    pairs = re.findall(r'^"([\w.]+)"\s*=\s*"([^"]+)"', section, flags=re.MULTILINE)
    if not pairs:
        raise SystemExit(f"{pyproject}: no [tool.setuptools.package-dir] entries")
    return {name: ROOT / folder for name, folder in pairs}


def build_tree(packages: dict[str, Path], tree: Path = TREE) -> dict[str, str]:
    """Symlink every module into ``tree`` under its import path; returns link -> module file (absolute)."""
    if tree.exists():
        shutil.rmtree(tree)
    tree.mkdir(parents=True)
    (tree.parent / ".gitignore").write_text("*\n")  # mypy writes the same into its cache folder
    paths: dict[str, str] = {}
    for name, folder in sorted(packages.items()):
        target = tree.joinpath(*name.split("."))
        target.mkdir(parents=True, exist_ok=True)
        for source in sorted([*folder.glob("*.py"), *folder.glob("*.pyi")]):
            link = target / source.name
            link.symlink_to(source)
            paths[str(link)] = str(source)
    return paths


def main(argv: list[str]) -> int:
    from mypy import api

    paths = build_tree(package_dirs())
    roots = sorted({name.split(".")[0] for name in package_dirs()})
    args = ["--config-file", str(ROOT / "pyproject.toml")]
    for root in roots:
        args += ["-p", root]
    stdout, stderr, status = api.run([*args, *argv])
    # mypy names files relative to the working directory (absolute with --show-absolute-path).
    renames = {os.path.relpath(k): os.path.relpath(v) for k, v in paths.items()} | paths
    for link in sorted(renames, key=len, reverse=True):  # longest first: no prefix rewritten alone
        stdout = stdout.replace(link, renames[link])
    sys.stdout.write(stdout)
    sys.stderr.write(stderr)
    return status


if __name__ == "__main__":
    sys.exit(main([a for a in sys.argv[1:] if a != "--"]))
