"""Typed configs: dataclasses validated at start, loadable from YAML, saved beside every output.

`load(cls, source, overrides)` builds a config dataclass from a YAML file/URI or a dict; unknown keys
and wrong types fail with the field path and the valid choices. Each job defines its config
dataclass next to the code that uses it and calls `load` on it.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from fer_ray import storage

T = TypeVar("T")


class ConfigError(ValueError):
    """A config that does not match its dataclass."""


def _convert(value: Any, hint: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError("; ".join(errors))
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, where)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__}")
        item = args[0] if args else Any
        items = [_convert(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
        vt = args[1] if len(args) == 2 else Any
        return {str(k): _convert(v, vt, f"{where}.{k}") for k, v in value.items()}
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint in (int, str, bool) and (not isinstance(value, hint) or (hint is int and isinstance(value, bool))):
        raise ConfigError(f"{where}: expected {hint.__name__}, got {value!r}")
    return value


def from_dict(cls: type[T], data: dict | None, where: str = "config") -> T:
    """Build dataclass `cls` from a mapping, checking keys and types; then run its `validate()`."""
    data = dict(data or {})
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    moved = getattr(cls, "moved_keys", {})  # keys a config once had at this level: name where they went
    if any(key in moved for key in unknown):
        raise ConfigError(f"{where}: " + "; ".join(f"{key} is now {moved[key]}" for key in unknown if key in moved))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; valid: {', '.join(fields)}")
    kwargs = {name: _convert(value, hints[name], f"{where}.{name}") for name, value in data.items()}
    try:
        obj = cls(**kwargs)
    except TypeError as exc:  # a required field is missing
        raise ConfigError(f"{where}: {exc}") from None
    validate = getattr(obj, "validate", None)
    if callable(validate):
        validate()
    return obj


def merge(base: dict, overrides: dict) -> dict:
    """`base` with `overrides` on top, nested mappings merged; None values in `overrides` ignored."""
    out = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        elif value is not None:
            out[key] = value
    return out


def read(source: str | Path | dict | None) -> dict:
    """The mapping of a YAML file/URI (or a dict as is; None: empty)."""
    if source is None:
        return {}
    if isinstance(source, dict):
        return source
    try:
        data = yaml.safe_load(storage.read_bytes(str(source)).decode("utf-8")) or {}
    except yaml.YAMLError as exc:  # say where and what, not the snippet of the file PyYAML's str() shows
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{source}: not valid YAML{where}: "
                          f"{getattr(exc, 'problem', None) or type(exc).__name__}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping")
    return data


def load(cls: type[T], source: str | Path | dict | None = None, overrides: dict | None = None,
         where: str | None = None) -> T:
    """Config from a YAML file/URI or a dict, with command-line overrides (None values ignored)."""
    return from_dict(cls, merge(read(source), overrides or {}), where=where or str(source or "config"))


def load_for_job(job: str, cls: type[T], source=None, overrides: dict | None = None) -> T:
    """`load` for a job's main(): a bad config or flag ends the job with one clear line, not a traceback."""
    try:
        return load(cls, source, overrides)
    except ValueError as exc:  # ConfigError and the dataclasses' own validate() errors
        raise SystemExit(f"{job}: invalid configuration: {exc}") from None


def to_dict(config) -> dict:
    return dataclasses.asdict(config)


def to_yaml(config) -> str:
    return yaml.safe_dump(to_dict(config), sort_keys=False)


def save(config, uri: str) -> None:
    """Write the resolved config (YAML) beside an output or checkpoint."""
    storage.write_text(uri, to_yaml(config))
