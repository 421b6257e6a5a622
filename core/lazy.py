"""The one way a package ``__init__`` exports names: listed as imports for type checkers, loaded on first use.

Every package ``__init__.py`` of ``maskahand`` reads::

    from __future__ import annotations

    from typing import TYPE_CHECKING

    __all__ = ["VideoReader", "open_video"]

    if TYPE_CHECKING:  # the exports, as type checkers and editors see them; loaded on first use
        from maskahand.video.reader import VideoReader, open_video
    else:
        from maskahand.core.lazy import lazy_exports

        __getattr__, __dir__ = lazy_exports(__name__, __file__, __all__)

The ``if TYPE_CHECKING`` imports are the single list of what the package exports and where each name
lives: :func:`lazy_exports` reads them from the file, so importing the package (and its light ``cli``
module) never imports torch, Ray or PyAV, while mypy sees real types instead of ``Any``. ``__all__`` must
name exactly the imported names, and no exported name may be a module name of the package (both checked
when the package is imported).
"""

from __future__ import annotations

import ast
import importlib
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def read_exports(package: str, init_file: str | Path) -> dict[str, tuple[str, str]]:
    """Exported name -> (module, name in that module), from the ``if TYPE_CHECKING:`` imports of a file."""
    tree = ast.parse(Path(init_file).read_text(), filename=str(init_file))
    exports: dict[str, tuple[str, str]] = {}
    for node in tree.body:
        if not (isinstance(node, ast.If) and _is_type_checking(node.test)):
            continue
        for stmt in node.body:
            if not isinstance(stmt, ast.ImportFrom) or stmt.module is None:
                raise ImportError(
                    f"{init_file}: only `from MODULE import NAME` belongs in the TYPE_CHECKING block"
                )
            module = stmt.module if stmt.level == 0 else f"{package}{'.' * (stmt.level - 1)}.{stmt.module}"
            for alias in stmt.names:
                exports[alias.asname or alias.name] = (module, alias.name)
    return exports


def lazy_exports(
    package: str, init_file: str, all_names: Sequence[str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package``, loading each exported name on first use."""
    exports = read_exports(package, init_file)
    if set(all_names) != set(exports):
        raise ImportError(
            f"{init_file}: __all__ and the TYPE_CHECKING imports differ: only in __all__ "
            f"{sorted(set(all_names) - set(exports))}, only imported {sorted(set(exports) - set(all_names))}"
        )

    # A submodule, once imported, is an attribute of its package and would shadow an export of its name.
    shadowed = sorted(n for n in exports if (Path(init_file).parent / f"{n}.py").exists())
    if shadowed:
        raise ImportError(f"{init_file}: exported names {shadowed} are also module names of {package}")

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module, attr = exports[name]
        value = getattr(importlib.import_module(module), attr)
        setattr(sys.modules[package], name, value)  # the next access skips __getattr__
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(exports))

    return __getattr__, __dir__
