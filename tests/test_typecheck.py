"""``tools/typecheck.py`` (run by ``make lint``): mypy sees ``maskahand.*`` through the folder mapping."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.tool_util import load_tool

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def typecheck():
    return load_tool("typecheck")


def test_the_root_is_linked_as_maskahand_and_every_package_is_listed(typecheck, tmp_path):
    link = typecheck.build_tree(tmp_path / "tree")
    assert link == tmp_path / "tree" / "maskahand" and link.resolve() == ROOT.resolve()
    names = typecheck.packages()
    # every folder with an __init__.py that is installed is listed, and each listed one exists
    folders = {p.parent.name for p in ROOT.glob("*/__init__.py")} - {"benchmarks"}
    assert {n.removeprefix("maskahand.") for n in names if n != "maskahand"} == folders
    assert (link / "core" / "config.py").exists()


def test_mypy_resolves_maskahand_imports(typecheck, tmp_path, monkeypatch):
    from mypy import api

    tree = tmp_path / "tree"
    typecheck.build_tree(tree)
    probe = tmp_path / "probe.py"
    probe.write_text("from maskahand.core.configbase import check_resume\nx: int = check_resume\n")
    args = ["--no-site-packages", "--follow-imports=silent", "--ignore-missing-imports"]
    args += ["--cache-dir", str(tmp_path / "cache"), "--python-version", f"{sys.version_info[0]}.10"]
    monkeypatch.setenv("MYPYPATH", str(tree))
    out, err, status = api.run([*args, "--config-file", "", str(probe)])
    assert status == 1, out + err
    # resolved: mypy knows the function's signature (unresolved, it would be an import error / Any)
    assert '(expression has type "Callable[[Any, str | Path, str], None]"' in out, out
    assert "import-not-found" not in out
