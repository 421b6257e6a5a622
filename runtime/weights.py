"""Weight files, one way: read, unwrap, rename, strict load, one report, one error.

Every model package (afformer, hotspots, detector) reads its weights through these and keeps only
what is its own: the table from the file's tensor names to the model's, and rules like "the heads
may stay untrained".

- Read: :func:`read_weights` picks by suffix: ``.safetensors`` (:func:`read_safetensors`, needs the
  ``safetensors`` package), ``.pkl``/``.pickle`` (:func:`read_pickle`: the authors' pickles, through
  :class:`RestrictedUnpickler`, which resolves only numpy's array reconstruction, so no code from
  the file can run), anything else a torch file (:func:`load_torch_file`, ``weights_only``).
- Unwrap: :func:`unwrap_state_dict` finds the state dict inside a file's object (``{"model": ...}``,
  Lightning's ``{"state_dict": ...}``, ...), turns numpy arrays into tensors and strips a prefix such
  as ``module.`` (``nn.DataParallel``) or ``network.`` (Lightning).
- Rename: :func:`rename_by_prefix` applies a (file prefix, model prefix) table.
- Load: :func:`load_strict` matches a state dict to a module's tensors and loads it, or raises
  :class:`WeightsMismatchError` carrying a :class:`LoadReport` (missing, unexpected, mis-shaped).

Errors: :class:`WeightsFileError` (a ``ValueError``) names the file and what is wrong with it;
:class:`WeightsMismatchError` is the one subclass for tensors that do not fit the model. Neither is a
usage error: a command that meets one exits with status 1 (``maskahand.core.cli_util.run_handler``), except
``detector run``, which reports an unusable ``detector.hircnn.weights`` as a usage error (2).
"""

from __future__ import annotations

import codecs
import io
import pickle
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
from torch import nn


class WeightsFileError(ValueError):
    """A weights or checkpoint file is missing, unreadable or does not hold what it should."""


class WeightsMismatchError(WeightsFileError):
    """A state dict's tensors do not fit the model; ``report`` says which are missing, unexpected or
    mis-shaped."""

    def __init__(self, message: str, report: LoadReport | None = None) -> None:
        super().__init__(message)
        self.report = report


# --------------------------------------------------------------------------------------------------
# reading


def load_torch_file(
    path: str | Path, what: str = "checkpoint", safe_globals: Sequence[Any] = (), hint: str = ""
) -> Any:
    """Read a torch file on the CPU without running pickled code (``weights_only``).

    Errors name the file and what it was meant to be (``what``: "backbone weights", "hircnn weights",
    ...) and end with ``hint`` (e.g. which option to set). ``safe_globals``: plain classes the file may
    hold besides tensors and containers (e.g. ``argparse.Namespace``).
    """
    path = _existing(path, what, hint)
    try:
        with torch.serialization.safe_globals(list(safe_globals)):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types for a bad file
        raise WeightsFileError(f"{path}: cannot read {what} as a torch file ({e}){_tail(hint)}") from e


def read_safetensors(path: str | Path, what: str = "weights", hint: str = "") -> dict[str, torch.Tensor]:
    """A ``.safetensors`` file's tensors (CPU). Needs the ``safetensors`` package, which the project
    does not install: without it the error says so."""
    path = _existing(path, what, hint)
    try:
        # deferred: optional dependency
        from safetensors.torch import load_file
    except ImportError as e:
        raise WeightsFileError(
            f"{path}: reading {what} from a .safetensors file needs the safetensors package "
            f"(pip install safetensors){_tail(hint)}"
        ) from e
    try:
        return dict(load_file(str(path), device="cpu"))
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error types
        raise WeightsFileError(f"{path}: cannot read {what} as a safetensors file ({e}){_tail(hint)}") from e


# the only globals a pickled numpy array needs (numpy 1.x and 2.x module names; protocol 2 writes an
# array's bytes through codecs.encode(str, "latin1"))
NUMPY_ARRAY_GLOBALS: Mapping[tuple[str, str], Any] = {
    ("_codecs", "encode"): codecs.encode,
    ("numpy.core.multiarray", "_reconstruct"): np._core.multiarray._reconstruct,  # type: ignore[attr-defined]
    ("numpy._core.multiarray", "_reconstruct"): np._core.multiarray._reconstruct,  # type: ignore[attr-defined]
    ("numpy.core.multiarray", "scalar"): np._core.multiarray.scalar,  # type: ignore[attr-defined]
    ("numpy._core.multiarray", "scalar"): np._core.multiarray.scalar,  # type: ignore[attr-defined]
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the globals in ``allowed`` (none by default) and no persistent
    ids, so loading a file cannot run code from it. ``accepts`` words the refusal ("a list of bytes")."""

    def __init__(
        self,
        file: BinaryIO,
        allowed: Mapping[tuple[str, str], Any] | None = None,
        accepts: str = "plain data",
        encoding: str = "ASCII",
    ) -> None:
        super().__init__(file, encoding=encoding)
        self._allowed = dict(allowed or {})
        self._accepts = accepts

    def find_class(self, module: str, name: str) -> Any:
        found = self._allowed.get((module, name))
        if found is None:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only {self._accepts} accepted")
        return found

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError(f"refusing persistent ids: only {self._accepts} accepted")


# what a malformed or refused pickle raises while loading
PICKLE_ERRORS = (
    pickle.UnpicklingError,
    EOFError,
    ValueError,
    TypeError,
    IndexError,
    KeyError,
    AttributeError,
)


def read_pickle(
    path: str | Path,
    what: str = "weights",
    allowed: Mapping[tuple[str, str], Any] = NUMPY_ARRAY_GLOBALS,
    accepts: str = "numpy arrays",
    hint: str = "",
) -> Any:
    """A pickle's object through :class:`RestrictedUnpickler` (by default: plain containers and numpy
    arrays, e.g. detectron2's ``.pkl`` checkpoints; Python 2 pickles are read as latin-1)."""
    path = _existing(path, what, hint)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise WeightsFileError(f"{path}: cannot read {what}: {e}{_tail(hint)}") from e
    try:
        return RestrictedUnpickler(io.BytesIO(data), allowed, accepts, encoding="latin1").load()
    except PICKLE_ERRORS as e:
        raise WeightsFileError(
            f"{path}: cannot read {what} as a pickle of {accepts}: {e}{_tail(hint)}"
        ) from e


PICKLE_SUFFIXES = (".pkl", ".pickle")


def read_weights(
    path: str | Path, what: str = "weights", safe_globals: Sequence[Any] = (), hint: str = ""
) -> Any:
    """The object in a weights file of any supported kind, chosen by suffix (see the module doc)."""
    suffix = Path(path).suffix.lower()
    if suffix == ".safetensors":
        return read_safetensors(path, what, hint)
    if suffix in PICKLE_SUFFIXES:
        return read_pickle(path, what, hint=hint)
    return load_torch_file(path, what, safe_globals, hint)


def _existing(path: str | Path, what: str, hint: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise WeightsFileError(f"{path}: {what} file does not exist{_tail(hint)}")
    return path


def _tail(hint: str) -> str:
    return f"; {hint}" if hint else ""


# --------------------------------------------------------------------------------------------------
# unwrapping and renaming


def unwrap_state_dict(
    obj: Any,
    where: str,
    containers: Iterable[str] = ("state_dict", "model"),
    prefix: str | None = None,
    expected: str = "",
) -> dict[str, torch.Tensor]:
    """The state dict inside ``obj`` (a file's object), as a new dict of tensors.

    ``obj`` may hold it under the first of ``containers`` that maps to a mapping (``{"model": sd}``);
    numpy arrays become tensors. When any key starts with ``prefix`` (``module.``, ``network.``), the
    keys that do are kept without it and the others dropped (a Lightning checkpoint's non-model
    entries). Anything else (no mapping, an empty one, a value that is not a tensor) raises
    :class:`WeightsFileError` naming ``where`` and ``expected``.
    """
    tail = f"; expected {expected}" if expected else ""
    state = obj
    if isinstance(state, Mapping):
        for key in containers:
            if isinstance(state.get(key), Mapping):
                state = state[key]
                break
    if not isinstance(state, Mapping) or not state:
        kind = "an empty mapping" if isinstance(state, Mapping) else f"a {type(state).__name__}"
        raise WeightsFileError(f"{where}: does not hold a state dict of tensors (found {kind}){tail}")
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if isinstance(value, np.ndarray):
            value = torch.from_numpy(np.ascontiguousarray(value))
        if not isinstance(value, torch.Tensor):
            raise WeightsFileError(
                f"{where}: does not hold a state dict of tensors ({key} is a {type(value).__name__}){tail}"
            )
        out[str(key)] = value
    if prefix and any(k.startswith(prefix) for k in out):
        out = {k[len(prefix) :]: v for k, v in out.items() if k.startswith(prefix)}
    return out


def rename_by_prefix(name: str, table: Iterable[tuple[str, str]]) -> str | None:
    """``name`` under the longest matching (from, to) prefix of ``table``, or None when none matches.

    A "from" ending in ``.`` matches every name below it; any other matches only itself (``h0``)."""
    best: tuple[str, str] | None = None
    for a, b in table:
        if (name == a or (a.endswith(".") and name.startswith(a))) and (
            best is None or len(a) > len(best[0])
        ):
            best = (a, b)
    return None if best is None else best[1] + name[len(best[0]) :]


def is_bn_counter(name: str) -> bool:
    """BatchNorm's ``num_batches_tracked``: unused by an eval-mode model, often absent from files."""
    return name.endswith("num_batches_tracked")


# --------------------------------------------------------------------------------------------------
# strict loading


@dataclass
class LoadReport:
    """What a state dict gave a model. Names in ``missing`` are shown as the file would name them."""

    loaded: list[str] = field(default_factory=list)  # the model's names that received a tensor
    missing: list[str] = field(default_factory=list)  # required by the model, absent from the file
    unexpected: list[str] = field(default_factory=list)  # the file's, with no place in the model
    shape_mismatch: list[str] = field(default_factory=list)  # "name: checkpoint (..) vs model (..)"
    adapted: list[str] = field(
        default_factory=list
    )  # changed to fit by the caller's rule, e.g. "t: 63 -> 127 rows"

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.shape_mismatch)

    def describe(self, limit: int = 10) -> str:
        """The problems, one part each: ``2 missing: a, b; 1 mis-shaped: c: checkpoint (..) vs model (..)``."""
        parts = []
        for label, items in (
            ("missing", self.missing),
            ("unexpected", self.unexpected),
            ("mis-shaped", self.shape_mismatch),
        ):
            if items:
                more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
                parts.append(f"{len(items)} {label}: {', '.join(items[:limit])}{more}")
        return "; ".join(parts) or "every tensor fits"

    def summary(self) -> str:
        """For the log: the count loaded, what was adapted, then the problems."""
        parts = [f"{len(self.loaded)} tensors loaded"]
        if self.adapted:
            parts.append(f"adapted: {', '.join(self.adapted)}")
        if not self.ok:
            parts.append(self.describe())
        return "; ".join(parts)


# a file's name -> the model's name(s) for it (one tensor may fill several), or None: no place
Renamer = Callable[[str], "str | Sequence[str] | None"]
# (model's name, file's tensor, model's tensor) -> (tensor to load, note for report.adapted or None), or None
Adapter = Callable[[str, torch.Tensor, torch.Tensor], "tuple[torch.Tensor, str | None] | None"]


def match_state_dict(
    model_state: Mapping[str, torch.Tensor],
    state: Mapping[str, torch.Tensor],
    to_model: Renamer | None = None,
    to_file: Callable[[str], str] | None = None,
    required: Callable[[str], bool] | None = None,
    adapt: Adapter | None = None,
) -> tuple[dict[str, torch.Tensor], LoadReport]:
    """Pair a file's tensors with a model's: (tensors to load under the model's names, report).

    A file name the model has is taken as it is; ``to_model`` maps any other to the model's name(s)
    (e.g. the authors' names to ours; None: no place).
    ``to_file``: a model name as the report shows it when missing (default: itself). ``required``:
    which model tensors must be found (default: all but BatchNorm counters, which a file may also
    hold without the model having them). ``adapt`` may replace a tensor before the shape check.
    """
    report = LoadReport()
    picked: dict[str, torch.Tensor] = {}
    mis_shaped: set[str] = set()
    for key, value in state.items():
        found = key if key in model_state or to_model is None else to_model(key)
        names = [found] if isinstance(found, str) else list(found or [])
        names = [n for n in names if n in model_state]
        if not names:
            if not is_bn_counter(key):
                report.unexpected.append(key)
            continue
        for name in names:
            ours = model_state[name]
            tensor = value
            changed = adapt(name, value, ours) if adapt else None
            if changed is not None:
                tensor, note = changed
                if note:
                    report.adapted.append(note)
            if tuple(tensor.shape) != tuple(ours.shape):
                report.shape_mismatch.append(
                    f"{key}: checkpoint {tuple(value.shape)} vs model {tuple(ours.shape)}"
                )
                mis_shaped.add(name)
            else:
                picked[name] = tensor
    need = required or (lambda name: not is_bn_counter(name))
    report.missing = [
        to_file(k) if to_file else k
        for k in model_state
        if need(k) and k not in picked and k not in mis_shaped
    ]
    report.loaded = sorted(picked)
    return picked, report


def load_strict(
    model: nn.Module,
    state: Mapping[str, torch.Tensor],
    where: str,
    against: str,
    to_model: Renamer | None = None,
    to_file: Callable[[str], str] | None = None,
    required: Callable[[str], bool] | None = None,
    adapt: Adapter | None = None,
    strict: bool = True,
    hint: str = "",
) -> LoadReport:
    """Load ``state`` into ``model`` by :func:`match_state_dict`; with ``strict``, any missing,
    unexpected or mis-shaped tensor raises :class:`WeightsMismatchError`
    ``"{where}: does not match {against}: <problems>; {hint}"`` before anything is loaded. Without it,
    every fitting tensor is loaded and the report says what was left out. Returns the report."""
    picked, report = match_state_dict(model.state_dict(), state, to_model, to_file, required, adapt)
    if strict and not report.ok:
        raise WeightsMismatchError(
            f"{where}: does not match {against}: {report.describe()}{_tail(hint)}", report
        )
    model.load_state_dict(picked, strict=False)
    return report
