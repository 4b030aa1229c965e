"""Typed key=value options: one parser for `--option` and `--task`, driven by config dataclasses.

A config dataclass declares its fields with types (and, through `option()`, a range or a set
of choices); `build(cls, values, flag)` turns strings from the command line (or typed values
from Python) into an instance. Every mistake is a one-line ConfigError naming the option, what
was expected and, for an unknown key, the valid ones.
"""

from __future__ import annotations

import ast
import difflib
import json
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import MISSING, Field, field, fields, is_dataclass, replace
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

from engine.errors import ConfigError, quote

T = TypeVar("T")
_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")
_NONE = ("none", "null")


def option(default: Any = MISSING, *, low: float | None = None, high: float | None = None,
           doc: str = "") -> Any:
    """A dataclass field with an inclusive range [low, high] that `check_ranges` enforces."""
    return field(default=default, metadata={"low": low, "high": high, "doc": doc})


def check_ranges(config: Any) -> None:
    """Raise a ConfigError for the first field outside its declared range (None is allowed:
    a None default means 'not set')."""
    for f in fields(config):
        low, high = f.metadata.get("low"), f.metadata.get("high")
        value = getattr(config, f.name)
        if value is None or (low is None and high is None):
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{f.name} must be a number, got {quote(value)}")
        if not math.isfinite(value) or (low is not None and value < low) or (
                high is not None and value > high):
            raise ConfigError(f"{f.name} must be {_range_text(low, high)}, got {value!r}")


def build(cls: type[T], values: Mapping[str, Any], flag: str, owner: str = "") -> T:
    """An instance of the dataclass `cls` from key -> value (strings or typed values).

    `flag` names where the values came from in messages (e.g. "--task", "--option"), `owner`
    what they configure (e.g. "the amazon source").
    """
    kwargs = _typed(cls, values, flag, owner)
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        raise ConfigError(f"{flag} {exc}") from exc


def override(config: T, values: Mapping[str, Any], flag: str, owner: str = "") -> T:
    """A copy of the dataclass instance `config` with `values` (strings or typed) applied."""
    kwargs = _typed(type(config), values, flag, owner)
    try:
        return replace(config, **kwargs)
    except ConfigError as exc:
        raise ConfigError(f"{flag} {exc}") from exc


def _typed(cls: type, values: Mapping[str, Any], flag: str, owner: str) -> dict[str, Any]:
    valid = [f.name for f in fields(cls) if f.init]
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, raw in values.items():
        if key not in valid:
            raise ConfigError(unknown_key(flag, key, valid, owner))
        kwargs[key] = coerce(raw, hints[key], f"{flag} {key}")
    return kwargs


def split_pairs(pairs: list[str] | tuple[str, ...], flag: str) -> dict[str, str]:
    """["a=1", "b=x"] -> {"a": "1", "b": "x"}; values stay strings for `build` to type."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{flag} expects key=value, got {quote(pair)}")
        out[key.strip()] = value.strip()
    return out


def unknown_key(flag: str, key: str, valid: list[str], owner: str = "") -> str:
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    where = f" of {owner}" if owner else ""
    return f"{flag}: unknown key {quote(key)}{where}{hint}; valid keys: {', '.join(valid)}"


def describe(cls: type) -> list[tuple[str, str, str]]:
    """(name, type, default) of each option of `cls`, for help texts and the README."""
    hints = typing.get_type_hints(cls)
    rows = []
    for f in fields(cls):
        if not f.init:
            continue
        kind = _type_name(hints[f.name])
        low, high = f.metadata.get("low"), f.metadata.get("high")
        if low is not None or high is not None:
            kind += f", {_range_text(low, high)}"
        rows.append((f.name, kind, _default_text(f)))
    return rows


def coerce(raw: Any, tp: Any, name: str) -> Any:
    """`raw` as a value of type `tp`; a string is parsed, a typed value is checked."""
    origin, args = get_origin(tp), get_args(tp)
    if tp is Any:
        return raw
    if origin in (Union, types.UnionType):
        options = [a for a in args if a is not type(None)]
        if raw is None or (isinstance(raw, str) and raw.strip().lower() in _NONE):
            if type(None) in args:
                return None
        if len(options) == 1:
            return coerce(raw, options[0], name)
        raise ConfigError(f"{name}: unsupported option type {tp}")  # not used by our configs
    if origin is Literal:
        if raw in args:
            return raw
        raise ConfigError(f"{name}: expected one of {', '.join(map(str, args))}; "
                          f"got {quote(raw)}")
    if tp is bool:
        return _bool(raw, name)
    if tp is int:
        return _int(raw, name)
    if tp is float:
        return _float(raw, name)
    if tp is str:
        if not isinstance(raw, str):
            raise ConfigError(f"{name}: expected text, got {quote(raw)}")
        return raw
    if origin is tuple:
        return _tuple(raw, args, name)
    if is_dataclass(tp):
        return _dataclass(raw, tp, name)
    raise ConfigError(f"{name}: unsupported option type {tp}")


def parse_mapping(raw: str, name: str) -> Any:
    """A JSON object (or the same with Python-style quotes) from an option string."""
    text = raw.strip()
    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        return ast.literal_eval(text)  # {'user': 'uid'} is as clear as JSON to a user
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as exc:
        raise ConfigError(
            f"{name}: expected a mapping like {{\"user\": \"uid\", \"item\": \"iid\"}}, "
            f"got {quote(raw)}") from exc


def _bool(raw: Any, name: str) -> bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw.strip().lower() in _TRUE + _FALSE:
        return raw.strip().lower() in _TRUE
    raise ConfigError(f"{name}: expected true or false, got {quote(raw)}")


def _int(raw: Any, name: str) -> int:
    if isinstance(raw, int) and not isinstance(raw, bool):
        return raw
    if isinstance(raw, str):
        try:
            return int(raw.strip())
        except ValueError:
            pass
    raise ConfigError(f"{name}: expected a whole number, got {quote(raw)}")


def _float(raw: Any, name: str) -> float:
    value: float | None = None
    if isinstance(raw, (int, float)) and not isinstance(raw, bool):
        value = float(raw)
    elif isinstance(raw, str):
        try:
            value = float(raw.strip())
        except ValueError:
            value = None
    if value is None or not math.isfinite(value):
        raise ConfigError(f"{name}: expected a finite number, got {quote(raw)}")
    return value


def _tuple(raw: Any, args: tuple, name: str) -> tuple:
    if isinstance(raw, str):
        text = raw.strip()
        parts = parse_mapping(text, name) if text[:1] in "[(" else text.split(",")
    else:
        parts = raw
    if not isinstance(parts, (list, tuple)):
        raise ConfigError(f"{name}: expected comma-separated values, got {quote(raw)}")
    if len(args) == 2 and args[1] is Ellipsis:
        return tuple(coerce(p, args[0], name) for p in parts)
    if len(parts) != len(args):
        raise ConfigError(f"{name}: expected {len(args)} comma-separated values, "
                          f"got {len(parts)} in {quote(raw)}")
    return tuple(coerce(p, a, name) for p, a in zip(parts, args))


def _dataclass(raw: Any, cls: type, name: str) -> Any:
    if isinstance(raw, cls):
        return raw
    parse = getattr(cls, "from_option", None)
    if parse is not None:  # a config with its own short form (TableColumns by position)
        return parse(raw, name)
    values = parse_mapping(raw, name) if isinstance(raw, str) else raw
    if not isinstance(values, Mapping):
        raise ConfigError(f"{name}: expected a mapping, got {quote(raw)}")
    return build(cls, values, name)


def _range_text(low: float | None, high: float | None) -> str:
    if low is not None and high is not None:
        return f"between {_number(low)} and {_number(high)}"
    return f">= {_number(low)}" if low is not None else f"<= {_number(high)}"


def _number(value: float | None) -> str:
    return f"{int(value):,}" if float(value).is_integer() else f"{value:g}"


def _type_name(tp: Any) -> str:
    origin, args = get_origin(tp), get_args(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in args if a is not type(None)) + " or none"
    if origin is Literal:
        return " | ".join(map(str, args))
    if origin is tuple:
        return "comma-separated " + (_type_name(args[0]) + "s" if args[-1] is Ellipsis
                                     else f"{len(args)} numbers")
    return {bool: "true/false", int: "whole number", float: "number", str: "text"}.get(
        tp, getattr(tp, "__name__", str(tp)))


def _default_text(f: Field) -> str:
    if f.default is not MISSING:
        text = repr(f.default) if not is_dataclass(f.default) else "see below"
        return text if len(text) <= 40 else text[:37] + "..."
    return "required"
