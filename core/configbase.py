"""Typed, nested dataclass configs: YAML loading, dotted overrides, strict validation.

Every stage config is a dataclass whose fields are scalars, lists, ``Literal`` choices, optional
values or nested dataclasses. ``load_config`` builds one from defaults, then a YAML file, then
``key.sub=value`` overrides, and fails with :class:`ConfigError` naming the offending key.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

from . import storage
from .fsutil import atomic_write_text

T = TypeVar("T")


class ConfigError(ValueError):
    """A config key is unknown, or its value has the wrong type or is not an allowed choice."""


#: Field metadata key of a string whose allowed values are known only at run time (a registry's names):
#: ``backend: str = field(default="auto", metadata={CHOICES: lambda: ["auto", *names()]})``. Checked
#: like a ``Literal`` when the config is loaded.
CHOICES = "choices"


def _is_optional(tp: Any) -> tuple[bool, Any]:
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) < len(get_args(tp)):
            inner = args[0] if len(args) == 1 else Union[tuple(args)]  # noqa: UP007
            return True, inner
    return False, tp


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against annotation ``tp`` and return it in canonical form."""
    optional, inner = _is_optional(tp)
    if value is None:
        if optional:
            return None
        raise ConfigError(f"config key '{key}': null is not allowed (expected {_type_name(inner)})")
    tp = inner
    origin = get_origin(tp)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}': expected a mapping for {tp.__name__}, got {value!r}")
        return from_dict(tp, value, prefix=key + ".")
    if origin is Literal:
        choices = get_args(tp)
        if value not in choices:
            raise ConfigError(f"config key '{key}': {value!r} is not one of {list(choices)}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{key}': expected a list, got {value!r}")
        args = get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"config key '{key}': expected {len(args)} items, got {len(value)}")
            return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        item_tp = args[0] if args else Any
        items = [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}': expected a mapping, got {value!r}")
        return dict(value)
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"config key '{key}': expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"config key '{key}': expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"config key '{key}': expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"config key '{key}': expected a string, got {value!r}")
    raise ConfigError(f"config key '{key}': unsupported annotation {tp!r}")


def _hints(cls: type) -> dict[str, Any]:
    return get_type_hints(cls, include_extras=False)


def _fields(cls: Any) -> tuple[dataclasses.Field, ...]:
    return dataclasses.fields(cls)


def from_dict(cls: type[T], data: dict[str, Any], prefix: str = "") -> T:
    """A ``cls`` config from a plain dict (the inverse of :func:`to_dict`, e.g. a checkpoint's stored config).

    Missing keys take ``cls``'s defaults; values are coerced to the field types; an unknown key is a
    ``ConfigError`` naming ``prefix + key`` (``prefix``: where the dict sits in the recipe, ``"model."``).
    """
    hints = _hints(cls)
    names = {f.name for f in _fields(cls)}
    for k in data:
        if k not in names:
            raise ConfigError(
                f"unknown config key '{prefix}{k}' (known keys of {cls.__name__}: {sorted(names)})"
            )
    base = cls()
    kwargs = {}
    for f in _fields(cls):
        if f.name in data:
            kwargs[f.name] = _coerce(data[f.name], hints[f.name], prefix + f.name)
            if CHOICES in f.metadata and kwargs[f.name] not in (choices := list(f.metadata[CHOICES]())):
                raise ConfigError(
                    f"config key '{prefix}{f.name}': {kwargs[f.name]!r} is not one of {choices}"
                )
        else:
            kwargs[f.name] = getattr(base, f.name)
    obj = cls(**kwargs)
    _validate(obj, prefix)
    return obj


def _validate(obj: Any, prefix: str) -> None:
    check = getattr(obj, "validate", None)
    if callable(check):
        try:
            check()
        except ValueError as e:
            raise ConfigError(f"config '{prefix.rstrip('.') or type(obj).__name__}': {e}") from e


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain, YAML-serialisable dict of a config (tuples become lists)."""

    def conv(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: conv(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [conv(x) for x in v]
        if isinstance(v, dict):
            return {k: conv(x) for k, x in v.items()}
        return v

    return conv(cfg)


def parse_override(text: str) -> tuple[str, Any]:
    """``a.b=1`` -> (``"a.b"``, 1). Values are parsed as YAML scalars/lists (``[1,2]``, ``null``)."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' must look like key.sub=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part.isidentifier() for part in key.split(".")):
        raise ConfigError(f"override '{text}': '{key}' is not a dotted config key")
    try:
        value = yaml.safe_load(raw) if raw.strip() != "" else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"override '{text}': cannot parse value: {e}") from e
    return key, value


# A positional argument shaped like key=value is read as an override; say how to pass such a file name.
FILE_NAME_HINT = "a file name with '=' goes after `--` or as ./NAME"


def apply_overrides(cfg: T, overrides: typing.Iterable[str]) -> T:
    """Return a copy of ``cfg`` with every ``key.sub=value`` override applied and re-validated."""
    data = to_dict(cfg)
    for text in overrides:
        key, value = parse_override(text)
        node = data
        parts = key.split(".")
        cls: Any = type(cfg)
        for i, part in enumerate(parts[:-1]):
            names = {f.name for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else set()
            if part not in names or not isinstance(node.get(part), dict):
                raise ConfigError(
                    f"unknown config key '{'.'.join(parts[: i + 1])}' in override '{text}'; {FILE_NAME_HINT}"
                )
            cls = _is_optional(_hints(cls)[part])[1]
            node = node[part]
        leaf = parts[-1]
        names = {f.name for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else set()
        if leaf not in names:
            raise ConfigError(
                f"unknown config key '{key}' in override '{text}' (known: {sorted(names)}); {FILE_NAME_HINT}"
            )
        tp = _hints(cls)[leaf]
        # YAML parses "5" as int for a float field and "abc" as str for anything: coerce once here so
        # the error names the key, and accept a quoted-less string for str fields.
        if _is_optional(tp)[1] is str and value is not None and not isinstance(value, str):
            value = text.split("=", 1)[1]
        node[leaf] = value
    return from_dict(type(cfg), data)


def load_config(cls: type[T], path: str | Path | None = None, overrides: typing.Iterable[str] = ()) -> T:
    """Defaults of ``cls`` <- its preset (see :func:`preset_overrides`) <- YAML file at ``path`` <- dotted
    ``overrides``."""
    overrides = list(overrides)
    data: dict[str, Any] | None = None
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {path} is not valid YAML: {e}") from e
        if not isinstance(data, dict):
            raise ConfigError(f"config file {path} must hold a mapping at top level")
    cfg = cls()
    preset = preset_overrides(cls, data, overrides)
    if preset:
        cfg = apply_overrides(cfg, preset)
    if data is not None:
        try:
            cfg = from_dict(cls, _merged(to_dict(cfg), data) if preset else data)
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from e
    elif not preset:
        _validate(cfg, "")
    return apply_overrides(cfg, overrides)


def public_dict(cfg: Any) -> dict[str, Any]:
    """``to_dict(cfg)`` without the fields marked :data:`SECRET` (what may be printed or saved)."""

    def conv(v: Any) -> Any:
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            return {f.name: conv(getattr(v, f.name)) for f in _fields(v) if not f.metadata.get("secret")}
        return to_dict(v)

    return conv(cfg)


def preset_overrides(cls: type, data: dict[str, Any] | None, overrides: list[str]) -> list[str]:
    """A recipe's defaults that depend on one choice: ``cls.PRESET_KEY`` (a dotted key, e.g.
    ``model.encoder``) selects ``cls.PRESETS[value]``, a list of overrides applied to the defaults before
    the YAML file and the command line (which still win). The value is the last override of that key,
    else the YAML file's, else none."""
    key = getattr(cls, "PRESET_KEY", None)
    presets = getattr(cls, "PRESETS", None) or {}
    if not key:
        return []
    value: Any = None
    for text in overrides:
        k, v = parse_override(text)
        if k == key:
            value = v
    if value is None and data is not None:
        node: Any = data
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        value = node
    return list(presets.get(value, ())) if isinstance(value, str) else []


def _merged(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in top.items():
        out[k] = _merged(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def dump_config(cfg: Any) -> str:
    """The YAML of a config as printed and saved: secret fields (credentials) left out."""
    return yaml.safe_dump(public_dict(cfg), sort_keys=False)


def save_config(cfg: Any, out_dir: str | Path, name: str = "config.yaml") -> Path | str:
    """Write the resolved config next to a stage's outputs (atomically); returns its path (or URL)."""

    if storage.is_url(str(out_dir)):  # an object store: one PUT, whole or not at all
        url = storage.join(str(out_dir), name)
        storage.put_bytes(url, dump_config(cfg).encode("utf-8"))
        return url
    out = Path(out_dir) / name
    atomic_write_text(out, dump_config(cfg))
    return out


# --- resuming: a run folder's saved config.yaml must match the new config --------------------------------

#: Field metadata of a setting that changes only speed or placement, never what a run produces (devices,
#: batch sizes of pure inference, worker counts, Ray options). ``check_resume`` ignores such fields and
#: everything under them: ``threads: int = field(default=0, metadata=RUNTIME)``.
RUNTIME = types.MappingProxyType({"runtime": True})
#: A runtime setting that may hold credentials (``storage.options``): never printed nor saved.
SECRET = types.MappingProxyType({"runtime": True, "secret": True})


class ConfigChangedError(ConfigError):
    """A run would resume into a folder made with a config that differs in a result-relevant key."""

    def __init__(self, message: str, changes: list[str]) -> None:
        super().__init__(message)
        self.changes = changes


def result_dict(cfg: Any) -> dict[str, Any]:
    """``to_dict(cfg)`` without the fields marked :data:`RUNTIME` (at any depth)."""

    def conv(v: Any) -> Any:
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            return {f.name: conv(getattr(v, f.name)) for f in _fields(v) if not f.metadata.get("runtime")}
        return to_dict(v)

    return conv(cfg)


def _strip_runtime(saved: Any, cfg_node: Any) -> Any:
    """``saved`` without the keys that are runtime-only in the config class ``cfg_node`` describes."""
    if not (isinstance(saved, dict) and dataclasses.is_dataclass(cfg_node)):
        return saved
    runtime = {f.name for f in _fields(cfg_node) if f.metadata.get("runtime")}
    return {k: _strip_runtime(v, getattr(cfg_node, k, None)) for k, v in saved.items() if k not in runtime}


def config_changes(saved: dict[str, Any], cfg: Any) -> list[str]:
    """``key.sub: old -> new`` for every result-relevant key where ``saved`` (a loaded config.yaml) and
    ``cfg`` differ, a key present on one side only included."""
    old, new = _strip_runtime(saved, cfg), result_dict(cfg)

    def diff(a: Any, b: Any, prefix: str) -> list[str]:
        if isinstance(a, dict) and isinstance(b, dict):
            return [
                d for k in sorted(set(a) | set(b), key=str) for d in diff(a.get(k), b.get(k), f"{prefix}{k}.")
            ]
        return [] if a == b else [f"{prefix.rstrip('.')}: {a!r} -> {b!r}"]

    return diff(old, new, "")


def check_resume(cfg: Any, out_dir: str | Path, name: str = "config.yaml") -> None:
    """Refuse to continue a run in ``out_dir`` whose saved ``name`` differs from ``cfg`` where it matters.

    Call it before writing anything into ``out_dir`` (then ``save_config(cfg, out_dir)``)::

        check_resume(recipe, out_dir)    # mine, synth, the trainer: raises ConfigChangedError
        save_config(recipe, out_dir)

    No saved config: nothing to check. Fields marked ``metadata=RUNTIME`` in ``core/config.py`` (and all
    below them) may change between runs. Any other difference raises :class:`ConfigChangedError` (a
    ``ConfigError``: the command exits with status 2) naming every changed key, ``synth.variants: 2 -> 3``.
    """

    if storage.is_url(str(out_dir)):
        path: Any = storage.join(str(out_dir), name)
        try:
            text = storage.read_bytes(path).decode("utf-8")
        except FileNotFoundError:
            return
    else:
        path = Path(out_dir) / name
        if not path.is_file():
            return
        text = path.read_text()
    try:
        saved = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML ({e}); remove it or use another output folder") from e
    if not isinstance(saved, dict):
        raise ConfigError(f"{path} does not hold a mapping; remove it or use another output folder")
    changes = config_changes(saved, cfg)
    if changes:
        raise ConfigChangedError(
            f"{out_dir} was made with a different config ({'; '.join(changes)}): resume with the same "
            f"settings (see {path}) or use another output folder",
            changes,
        )
