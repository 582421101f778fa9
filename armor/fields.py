"""Values checked against the annotations of config dataclass fields, strictly.

YAML, JSON, Tune samples and code all fill the same frozen dataclasses; each value must be what
its field's annotation says, or a :class:`ConfigError` names the field and the value. Strict
means: a bool is not a number and a number is not a bool (``content: "no"`` is an error, not
False), a string is never a number (``epochs: "10"``), a float is not an int (``epochs: 2.5``);
an int is a float (``lr: 1`` is 1.0), a list is a tuple, and numpy scalars count as the Python
kind they are. A ``Literal`` annotation is the one list of choices: this check and the CLI's
``choices`` (``pipelines/cli.py``) both read it.
"""

from __future__ import annotations

import dataclasses
import functools
import numbers
import types
import typing
from collections.abc import Mapping
from typing import Any

import numpy as np

from armor.errors import ConfigError

_UNION = (typing.Union, types.UnionType)


@functools.cache
def field_hints(cls: type) -> dict[str, Any]:
    """The resolved annotations of a dataclass's fields (``from __future__ import annotations`` makes them strings)."""
    return typing.get_type_hints(cls)


def choices(hint: Any) -> tuple[Any, ...]:
    """The values a ``Literal`` annotation (or ``Literal | None``, or a tuple of ``Literal``) allows; () otherwise."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Literal:
        return args
    if origin in _UNION or origin is tuple:
        return next((c for c in map(choices, args) if c), ())
    return ()


def describe(hint: Any) -> str:
    """An annotation in words, for an error message."""
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint in names:
        return names[hint]
    if origin is typing.Literal:
        return "one of " + ", ".join(map(str, args))
    if origin in _UNION:
        return " or ".join("unset (null)" if a is type(None) else describe(a) for a in args)
    if origin is tuple:
        each = describe(args[0]) if len(args) == 2 and args[1] is Ellipsis else ", ".join(map(describe, args))
        return f"a list of {each}" if len(args) == 2 and args[1] is Ellipsis else f"a list of ({each})"
    return getattr(hint, "__name__", str(hint))


def coerce(hint: Any, value: Any, where: str) -> Any:
    """``value`` as annotation ``hint`` says (see the module docstring), else a ConfigError naming ``where``."""
    if hint is Any:
        return value
    if isinstance(hint, type) and hasattr(hint, "from_dict") and isinstance(value, Mapping):
        return hint.from_dict(value, where)  # a type that knows how to rebuild itself
    if dataclasses.is_dataclass(hint):
        if isinstance(value, hint):  # type: ignore[arg-type]
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping of {hint.__name__} settings, got {value!r}")
        from armor.config import from_dict

        return from_dict(hint, value, where)  # type: ignore[type-var]
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in _UNION:
        return _union(hint, args, value, where)
    if origin is typing.Literal:
        if any(type(value) is type(c) and value == c for c in args):
            return value
        raise ConfigError(f"{where}: must be one of {', '.join(map(str, args))}, got {value!r}")
    if origin is tuple:
        return _tuple(hint, args, value, where)
    if origin is not None:  # Mapping, Callable, frozenset, ...: not a setting's type, checked by its class
        return value
    return _scalar(hint, value, where)


def _union(hint: Any, args: tuple[Any, ...], value: Any, where: str) -> Any:
    if value is None:
        if type(None) in args:
            return None
        raise ConfigError(f"{where}: expected {describe(hint)}, got None")
    for arg in args:
        if arg is type(None):
            continue
        try:
            return coerce(arg, value, where)
        except ConfigError:
            continue
    raise ConfigError(f"{where}: expected {describe(hint)}, got {value!r}")


def _tuple(hint: Any, args: tuple[Any, ...], value: Any, where: str) -> tuple[Any, ...]:
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"{where}: expected {describe(hint)}, got {value!r}")
    if len(args) == 2 and args[1] is Ellipsis:
        items = [args[0]] * len(value)
    elif args:
        if len(value) != len(args):
            raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)}: {value!r}")
        items = list(args)
    else:
        items = [Any] * len(value)
    return tuple(coerce(item, v, f"{where}[{i}]") for i, (item, v) in enumerate(zip(items, value)))


def _scalar(hint: Any, value: Any, where: str) -> Any:
    is_bool = isinstance(value, (bool, np.bool_))
    if hint is bool:
        if is_bool:
            return bool(value)
    elif hint is int:
        if isinstance(value, numbers.Integral) and not is_bool:
            return int(value)
    elif hint is float:
        if isinstance(value, numbers.Real) and not is_bool:
            return float(value)
    elif not isinstance(hint, type) or isinstance(value, hint):
        return value
    raise ConfigError(f"{where}: expected {describe(hint)}, got {value!r} ({type(value).__name__})")


def check_fields(config: Any, section: str) -> None:
    """Check every field of a (frozen) dataclass instance against its annotation and store the
    coerced values (``1`` becomes ``1.0`` in a float field); ConfigError names ``section.field``.
    A field whose default is None may be None whatever its annotation says."""
    hints = field_hints(type(config))
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if value is None and field.default is None:
            continue
        coerced = coerce(hints[field.name], value, f"{section}.{field.name}")
        if coerced is not value:
            object.__setattr__(config, field.name, coerced)
