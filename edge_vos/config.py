"""Typed configuration: dataclasses filled from YAML, validated once at start-up.

Every section is a dataclass living next to the code it configures; this module only knows how to fill
any dataclass from plain data and how to report what is wrong with the full dotted field name.
Sections validate themselves in `__post_init__` by raising `ConfigError(field, message)`.
"""

from __future__ import annotations

import copy
import dataclasses
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """Invalid configuration; `field` is the dotted path of the offending entry."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}" if field else message)

    def under(self, prefix: str) -> ConfigError:
        return ConfigError(f"{prefix}.{self.field}" if self.field else prefix, self.message)


def one_of(field: str, value: object, allowed: typing.Iterable[object]) -> None:
    """Raises ConfigError unless value is in allowed."""
    allowed = list(allowed)
    if value not in allowed:
        raise ConfigError(field, f"must be one of {allowed}, got {value!r}")


def positive(field: str, value: float | int, *, allow_zero: bool = False) -> None:
    if value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(field, f"must be {'>= 0' if allow_zero else '> 0'}, got {value!r}")


def from_dict(cls: type[T], data: Mapping[str, Any] | None, prefix: str = "") -> T:
    """Builds dataclass `cls` from a mapping; unknown keys and wrong types are errors naming the field."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(prefix, f"expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(prefix, f"unknown field(s) {unknown}; known: {sorted(fields)}")
    kwargs = {}
    for name, value in data.items():
        path = f"{prefix}.{name}" if prefix else name
        kwargs[name] = _coerce(hints[name], value, path)
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        raise exc.under(prefix) if prefix else exc from None


def _coerce(hint: Any, value: Any, path: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, path)
            except ConfigError as exc:
                errors.append(exc.message)
        raise ConfigError(path, "; ".join(errors))
    if origin is typing.Literal:
        one_of(path, value, args)
        return value
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, path)  # type: ignore[arg-type]
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(path, f"expected a list, got {type(value).__name__}")
        item = args[0] if args else Any
        items = [_coerce(item, v, f"{path}[{i}]") for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(path, f"expected a mapping, got {type(value).__name__}")
        return dict(value)
    if hint is Any:
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(path, f"expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(path, f"expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(path, f"expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(path, f"expected a string, got {value!r}")
        return value
    return value


def to_dict(config: object) -> dict[str, Any]:
    """Plain-data view of a config (for checkpoints and run records; secrets included)."""
    return dataclasses.asdict(config)  # type: ignore[call-overload]


SECRET: Mapping[str, bool] = types.MappingProxyType({"secret": True})
"""`dataclasses.field(metadata=SECRET)` marks a field whose value must not leave the process."""

REDACTED = "<redacted>"


def redacted_dict(config: object) -> dict[str, Any]:
    """`to_dict` with every non-empty SECRET field replaced (what a `config` reply or a log may show)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(config):  # type: ignore[arg-type]
        value = getattr(config, f.name)
        if f.metadata.get("secret") and value:
            out[f.name] = REDACTED
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            out[f.name] = redacted_dict(value)
        else:
            out[f.name] = copy.deepcopy(value)
    return out


def read_yaml(path: str | Path) -> dict[str, Any]:
    """The mapping at the top of a YAML file (empty file: {}); ConfigError naming the file otherwise."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError("", f"config file not found: {path}")
    try:
        loaded = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError("", f"{path}: not valid YAML: {exc}") from None
    if loaded is not None and not isinstance(loaded, dict):
        raise ConfigError("", f"{path}: top level must be a mapping")
    return loaded or {}


def load_yaml(cls: type[T], path: str | Path | None, overrides: Mapping[str, Any] | None = None) -> T:
    """Reads YAML (or nothing), applies dotted-key overrides such as {"source.uri": "x.mp4"}, validates."""
    data = read_yaml(path) if path is not None else {}
    return from_dict(cls, with_overrides(data, overrides))


def with_overrides(data: dict[str, Any], overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    """`data` (changed in place) with dotted-key overrides such as {"source.uri": "x.mp4"} applied."""
    for dotted, value in (overrides or {}).items():
        node = data
        keys = dotted.split(".")
        for key in keys[:-1]:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise ConfigError(dotted, "cannot override inside a non-mapping value")
        node[keys[-1]] = value
    return data
