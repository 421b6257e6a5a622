"""Run mypy over the ``maskahand`` package, whatever the checkout's folder is called.

The repository root is the package ``maskahand`` (``[tool.setuptools.package-dir] "maskahand" = "."``), and
every internal import is relative, so mypy follows them by path. What mypy cannot know is the package's
name: it names modules after folders, and a checkout is usually called ``main`` or ``maskahand-main``.
This script therefore links the root once as ``.mypy_cache/tree/maskahand`` (rebuilt on every run), runs
mypy on the packages listed in ``[tool.setuptools] packages`` with ``mypy_path`` pointing at the link's
folder, and prints mypy's report with the repository's own paths (``video/reader.py:12: error: ...``).

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


def packages(pyproject: Path = ROOT / "pyproject.toml") -> list[str]:
    """The package names of ``[tool.setuptools] packages`` (a line parser: Python 3.10 has no tomllib)."""
    section = pyproject.read_text().split("[tool.setuptools]\n", 1)[1].split("\n[", 1)[0]
    names = re.findall(r'"(maskahand(?:\.\w+)*)"', section)
    if not names:
        raise SystemExit(f"{pyproject}: no [tool.setuptools] packages")
    return names


def build_tree(tree: Path = TREE) -> Path:
    """``tree/maskahand`` -> the repository root; returns the link."""
    if tree.exists():
        shutil.rmtree(tree)
    tree.mkdir(parents=True)
    (tree.parent / ".gitignore").write_text("*\n")  # mypy writes the same into its cache folder
    link = tree / "maskahand"
    link.symlink_to(ROOT, target_is_directory=True)
    return link


def main(argv: list[str]) -> int:
    from mypy import api

    link = build_tree()
    args = ["--config-file", str(ROOT / "pyproject.toml")]
    for name in packages():
        args += ["-m" if name == "maskahand" else "-p", name]
    stdout, stderr, status = api.run([*args, *argv])
    # mypy names files relative to the working directory (absolute with --show-absolute-path).
    for prefix in (str(link) + os.sep, os.path.relpath(link) + os.sep):
        stdout = stdout.replace(prefix, "")
    sys.stdout.write(stdout)
    sys.stderr.write(stderr)
    return status


if __name__ == "__main__":
    sys.exit(main([a for a in sys.argv[1:] if a != "--"]))
