"""``tools/typecheck.py`` (run by ``make lint``): mypy sees ``maskahand.*`` through the folder mapping."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def typecheck():
    spec = importlib.util.spec_from_file_location("typecheck", ROOT / "tools" / "typecheck.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_module_is_linked_under_its_import_path(typecheck, tmp_path):
    packages = typecheck.package_dirs()
    assert packages["maskahand"] == ROOT / "core" and packages["maskahand.video"] == ROOT / "video"
    paths = typecheck.build_tree(packages, tmp_path / "tree")
    expected = {
        str(tmp_path / "tree" / Path(*name.split(".")) / source.name): str(source)
        for name, folder in packages.items()
        for source in folder.glob("*.py")
    }
    assert paths == expected
    assert all(Path(link).resolve() == Path(source).resolve() for link, source in paths.items())


def test_mypy_resolves_maskahand_imports(typecheck, tmp_path, monkeypatch):
    from mypy import api

    tree = tmp_path / "tree"
    typecheck.build_tree(typecheck.package_dirs(), tree)
    probe = tmp_path / "probe.py"
    probe.write_text("from maskahand.configbase import check_resume\nx: int = check_resume\n")
    args = ["--no-site-packages", "--follow-imports=silent", "--ignore-missing-imports"]
    args += ["--cache-dir", str(tmp_path / "cache"), "--python-version", f"{sys.version_info[0]}.10"]
    monkeypatch.setenv("MYPYPATH", str(tree))
    out, err, status = api.run([*args, "--config-file", "", str(probe)])
    assert status == 1, out + err
    # resolved: mypy knows the function's signature (unresolved, it would be an import error / Any)
    assert '(expression has type "Callable[[Any, str | Path, str], None]"' in out, out
    assert "import-not-found" not in out
