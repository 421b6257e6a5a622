"""Extension points: evaluation datasets and detector backends, each found in one place.

Adding an evaluation dataset or a detector backend is one module and nothing else. The module declares
itself with one literal dict at module level, named after its extension point::

    DATASET = {"name": "opra", "help": "OPRA (the authors' layout)", "reader": "read_opra"}
    DETECTOR_BACKEND = {"name": "hircnn", "help": "...", "factory": "HircnnDetector", "contact_judged": True}

The value names the function (``reader``) or class (``factory``) of the same module that does the work.
Modules are found two ways:

- **in the repository**: every module of the extension point's package (``maskahand.evaluation``,
  ``maskahand.detector``) that holds the declaration; ``pkgutil`` lists the package's modules;
- **out of tree**: a distribution's entry point in the group (``maskahand.datasets``,
  ``maskahand.detector_backends``), ``NAME = module``, the module holding the same declaration.

Declarations are read from the module's source (``ast.literal_eval``), not by importing it: a detector
module imports torch or mediapipe at its top, while ``maskahand --help`` and config validation must stay
light. The module is imported when its reader/factory is first used (:meth:`Plugin.load`).
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import logging
import pkgutil
import re
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]*$")


class PluginError(ValueError):
    """A module's declaration is malformed, or its reader/factory cannot be loaded; names the module."""


class UnknownPluginError(ValueError):
    """No dataset / backend of that name is registered."""


@dataclass(frozen=True)
class Plugin:
    """One registered dataset or backend: what its declaration says and where it lives."""

    name: str
    help: str
    module: str  # importable module name
    target: str  # the function / class of `module` that does the work
    options: dict[str, Any] = field(default_factory=dict, compare=False)  # extension-point specific fields
    source: str = "maskahand"  # "maskahand" (in the repository) or the distribution of the entry point

    def load(self) -> Any:
        """The reader / factory (imports the module)."""
        module = importlib.import_module(self.module)
        try:
            return getattr(module, self.target)
        except AttributeError:
            raise PluginError(f"{self.module}: declares {self.target!r}, which it does not define") from None


@dataclass(frozen=True)
class ExtensionPoint:
    what: str  # "dataset", "detector backend": used in messages
    group: str  # entry-point group of out-of-tree modules
    package: str  # in-repository package whose modules are searched
    variable: str  # the module-level declaration's name
    target: str  # the declaration key naming the function / class
    defaults: dict[str, Any] = field(default_factory=dict)  # optional declaration keys and their values
    _cache: dict[str, dict[str, Plugin]] = field(default_factory=dict, compare=False, repr=False)

    def plugins(self) -> dict[str, Plugin]:
        """Every registered name -> Plugin (repository modules, then entry points), sorted by name."""
        if "all" not in self._cache:
            found = self._in_repository()
            for plugin in self._entry_points():
                if plugin.name in found:
                    log.warning(
                        "%s %r of %s is ignored: %s already names one (%s)",
                        self.what, plugin.name, plugin.source, plugin.name, found[plugin.name].module,
                    )  # fmt: skip
                    continue
                found[plugin.name] = plugin
            self._cache["all"] = dict(sorted(found.items()))
        return self._cache["all"]

    def names(self) -> list[str]:
        return list(self.plugins())

    def get(self, name: str) -> Plugin:
        try:
            return self.plugins()[name]
        except KeyError:
            raise UnknownPluginError(
                f"unknown {self.what} {name!r}; known: {', '.join(self.names())}"
            ) from None

    def load(self, name: str) -> Any:
        """The reader / factory registered as ``name``."""
        return self.get(name).load()

    def help_text(self) -> str:
        """``name: help; ...`` for a command-line option's help (``%`` escaped for argparse)."""
        return "; ".join(f"{p.name}: {p.help}" for p in self.plugins().values()).replace("%", "%%")

    def _in_repository(self) -> dict[str, Plugin]:
        spec = importlib.util.find_spec(self.package)  # imports the parents only, not the package
        if spec is None or not spec.submodule_search_locations:
            raise PluginError(f"{self.package}: package not found")
        found: dict[str, Plugin] = {}
        for info in pkgutil.iter_modules(list(spec.submodule_search_locations)):
            if info.ispkg:
                continue
            path = Path(getattr(info.module_finder, "path", "")) / f"{info.name}.py"
            plugin = self._read(f"{self.package}.{info.name}", path, "maskahand")
            if plugin is None:
                continue
            if plugin.name in found:
                raise PluginError(
                    f"{path}: {self.what} {plugin.name!r} is declared by {found[plugin.name].module} too"
                )
            found[plugin.name] = plugin
        return found

    def _entry_points(self) -> list[Plugin]:
        out = []
        for ep in entry_points(group=self.group):
            source = f"{ep.dist.name if ep.dist else '?'} (entry point {ep.name} = {ep.value})"
            try:
                spec = importlib.util.find_spec(ep.module)
                if spec is None or spec.origin is None:
                    raise PluginError(f"{ep.module}: module not found")
                plugin = self._read(ep.module, Path(spec.origin), source)
                if plugin is None:
                    raise PluginError(f"{spec.origin}: no {self.variable} = {{...}} declaration")
                if plugin.name != ep.name:
                    raise PluginError(
                        f"{spec.origin}: declares {plugin.name!r}, its entry point says {ep.name!r}"
                    )
            except (PluginError, ImportError) as e:  # one broken plugin must not take every command down
                log.warning("%s plugin of %s is ignored: %s", self.what, source, e)
                continue
            out.append(plugin)
        return out

    def _read(self, module: str, path: Path, source: str) -> Plugin | None:
        """The declaration in ``path`` (None: the module declares nothing here)."""
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            return None
        found = re.search(rf"^{self.variable}\s*[:=]", text, re.MULTILINE)
        if found is None:
            return None
        value = None
        for node in _statement_at(text, found.start(), path).body:
            if isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                if any(isinstance(t, ast.Name) and t.id == self.variable for t in targets):
                    try:
                        value = ast.literal_eval(node.value)
                    except ValueError:
                        raise PluginError(f"{path}: {self.variable} must be a literal dict") from None
        if value is None:
            return None
        return self._plugin(value, module, path, source)

    def _plugin(self, decl: Any, module: str, path: Path, source: str) -> Plugin:
        required = ("name", "help", self.target)
        if not isinstance(decl, dict):
            raise PluginError(f"{path}: {self.variable} must be a dict, got {type(decl).__name__}")
        missing = [k for k in required if not isinstance(decl.get(k), str)]
        unknown = sorted(set(decl) - set(required) - set(self.defaults))
        if missing or unknown:
            raise PluginError(
                f"{path}: {self.variable} needs string keys {list(required)}"
                + (f", lacks {missing}" if missing else "")
                + (f"; unknown keys {unknown} (known: {sorted(self.defaults)})" if unknown else "")
            )
        if not _NAME.match(decl["name"]):
            raise PluginError(f"{path}: {self.what} name {decl['name']!r} is not a plain name")
        options = {**self.defaults, **{k: v for k, v in decl.items() if k in self.defaults}}
        return Plugin(decl["name"], decl["help"], module, decl[self.target], options, source)


def _statement_at(text: str, start: int, path: Path) -> ast.Module:
    """The top-level statement starting at ``start``, parsed alone (parsing a whole detector module
    costs ~5 ms a file, on every command); the whole file when the statement does not stand alone."""
    lines = text[start:].splitlines(keepends=True)
    end = 1
    while end < len(lines) and lines[end][:1] in ("", " ", "\t", "\n", "\r", "}", ")", "]", "#"):
        end += 1  # continuation lines of a bracketed value; the next top-level statement ends it
    try:
        return ast.parse("".join(lines[:end]), str(path))
    except SyntaxError:
        return ast.parse(text, str(path))


DATASETS = ExtensionPoint(
    what="dataset",
    group="maskahand.datasets",
    package="maskahand.evaluation",
    variable="DATASET",
    target="reader",  # reader(annotations: Location | None, root: Location | None, split) -> Benchmark
)

DETECTOR_BACKENDS = ExtensionPoint(
    what="detector backend",
    group="maskahand.detector_backends",
    package="maskahand.detector",
    variable="DETECTOR_BACKEND",
    target="factory",  # factory(cfg: DetectorConfig) -> HandDetector
    defaults={
        "contact_judged": True,  # False: every hand is "unknown" (the mining rule records it)
        # The frames `mine` gives it (maskahand.mine.resolution): "full" (source size), "stored" (the
        # stored frames: boxes in normalised units), "torchvision" (torchvision's min_size/max_size
        # resize rule with detector.hircnn's sizes: what a Faster R-CNN would resize to anyway).
        "detect_size": "full",
    },
)
