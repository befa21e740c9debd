"""Strict YAML -> frozen dataclass loading.

Configs are checked when they are read, not when a value is first used deep inside a
Spark task: an unknown key, a missing key or a value of the wrong type raises
ConfigError naming the dotted key and the expected type. Schemas are plain dataclasses
that live beside the code using them; this module knows none of them.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Literal, Mapping, TypeVar, Union

from fer_core.errors import ConfigError

T = TypeVar("T")

__all__ = ["load_dataclass", "load_yaml", "dataclass_to_dict", "key_value_arg"]


def _where(path: str) -> str:
    return path or "<root>"


def _type_name(tp: Any) -> str:
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, path: str) -> Any:
    """Check (and lightly coerce) one value against a type annotation."""
    if tp is Any or tp is object:
        return value
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)

    if origin is Union or origin is types.UnionType:
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, path)
            except ConfigError:
                pass
        raise ConfigError(f"{_where(path)}: expected {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{_where(path)}: expected one of {list(args)}, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if isinstance(value, tp):
            return value
        return load_dataclass(tp, value, path)
    if origin in (list, tuple) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{_where(path)}: expected a list ({_type_name(tp)}), got {value!r}")
        if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
            if len(value) != len(args):
                raise ConfigError(f"{_where(path)}: expected {len(args)} items ({_type_name(tp)}), got {len(value)}")
            items = [_convert(v, a, f"{path}[{i}]") for i, (v, a) in enumerate(zip(value, args))]
        else:
            item_tp = args[0] if args else Any
            items = [_convert(v, item_tp, f"{path}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if (origin is tuple or tp is tuple) else items
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{_where(path)}: expected a mapping ({_type_name(tp)}), got {value!r}")
        key_tp, val_tp = args if args else (Any, Any)
        out = {}
        for k, v in value.items():
            key = f"{path}.{k}" if path else str(k)
            out[_convert(k, key_tp, key)] = _convert(v, val_tp, key)
        return out
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{_where(path)}: expected bool (true/false), got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{_where(path)}: expected int, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{_where(path)}: expected float, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{_where(path)}: expected str, got {value!r}")
        return value
    if isinstance(tp, type):
        if not isinstance(value, tp):
            raise ConfigError(f"{_where(path)}: expected {tp.__name__}, got {value!r}")
        return value
    return value  # an annotation we do not understand: accept as is


def load_dataclass(cls: type[T], mapping: Mapping[str, Any] | None, path: str = "") -> T:
    """Build dataclass ``cls`` (recursively, nested dataclasses too) from a plain mapping.

    ``path`` is the dotted prefix used in error messages (e.g. "scoring.model").
    Missing keys take the dataclass defaults. Errors raised by the dataclass's own
    ``__post_init__`` validation are re-raised as ConfigError prefixed with ``path``. A schema that
    retired a key can say where it went in a ``MOVED_KEYS`` class attribute ({old key: what to write
    instead}); that key is still refused, with that advice.
    """
    if not (dataclasses.is_dataclass(cls) and isinstance(cls, type)):
        raise TypeError(f"load_dataclass needs a dataclass type, got {cls!r}")
    if mapping is None:
        mapping = {}
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    if not isinstance(mapping, Mapping):
        raise ConfigError(f"{_where(path)}: expected a mapping for {cls.__name__} (keys {sorted(fields)}), "
                          f"got {mapping!r}")
    hints = typing.get_type_hints(cls)
    unknown = [k for k in mapping if k not in fields]
    if unknown:
        key = f"{path}.{unknown[0]}" if path else str(unknown[0])
        moved = getattr(cls, "MOVED_KEYS", {}).get(unknown[0])
        if moved:
            raise ConfigError(f"{key}: unknown key, {moved}")
        raise ConfigError(f"{key}: unknown key; {cls.__name__} accepts {sorted(fields)}")
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        key = f"{path}.{name}" if path else name
        if name in mapping:
            kwargs[name] = _convert(mapping[name], hints.get(name, Any), key)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{key}: required key is missing ({_type_name(hints.get(name, Any))})")
    try:
        return cls(**kwargs)
    except ConfigError as e:  # the dataclass's own check; its message starts with its key
        raise ConfigError(f"{path}.{e}" if path else str(e)) from None
    except (ValueError, TypeError) as e:
        raise ConfigError(f"{_where(path)}: invalid {cls.__name__}: {e}") from None


def load_yaml(path: str | Path, cls: type[T]) -> T:
    """Read a YAML file and build ``cls`` from it; errors name the file and the key."""
    import yaml

    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"{p}: cannot read config file ({e.strerror or e})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML: {e}") from None
    try:
        return load_dataclass(cls, data or {})
    except ConfigError as e:
        raise ConfigError(f"{p}: {e}") from None


def dataclass_to_dict(obj: Any) -> Any:
    """Inverse of load_dataclass for plain values (tuples become lists): for dumping/hashing configs."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: dataclass_to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [dataclass_to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: dataclass_to_dict(v) for k, v in obj.items()}
    return obj


def key_value_arg(text: str) -> tuple[str, str]:
    """argparse ``type=`` for repeatable ``KEY=VALUE`` options (e.g. --storage-option)."""
    import argparse

    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value
