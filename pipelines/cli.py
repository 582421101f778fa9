"""Shared command-line plumbing: flags generated from config dataclasses, logging, error reporting,
and stage entrypoints.

A stage's flags come from the fields of the dataclasses its typed function takes: a field's name,
type, default and help (``armor.config.setting``) are written once, on the dataclass, and
``add_dataclass_arguments`` / ``dataclass_from_args`` turn them into flags and back.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import types
import typing
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, TypeVar

from armor.errors import ArmorError

log = logging.getLogger("armor")

T = TypeVar("T")


def _flag(prefix: str, name: str) -> str:
    return "--" + (prefix + name).replace("_", "-")


def _dest(prefix: str, name: str) -> str:
    return (prefix + name).replace("-", "_")


def _argument(hint: Any, default: Any) -> dict[str, Any]:
    """argparse keyword arguments (type, choices, nargs, action) for a field type."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):  # X | None
        inner = [a for a in args if a is not type(None)]
        return _argument(inner[0], default) if len(inner) == 1 else {}
    if origin is typing.Literal:
        return {"choices": list(args), "type": type(args[0])}
    if origin is tuple:
        return {"nargs": "+", **_argument(args[0], None)}
    if hint is bool:  # a switch that turns the default off: --use-gpu, --no-tracking
        return {"action": "store_false" if default else "store_true"}
    if hint in (int, float, str):
        return {"type": hint}
    raise TypeError(f"no command-line form for a field of type {hint!r}")


def add_dataclass_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup, cls: type, *,
                            prefix: str = "", exclude: Collection[str] = (), defaults: Any = None,
                            required: Collection[str] = (), choices: Mapping[str, Sequence[Any]] | None = None,
                            ) -> None:
    """One flag per field of dataclass ``cls``: ``--{prefix}{field-name}``, defaults from ``defaults``
    (an instance) or the field's own default, help from the field's ``help`` metadata; ``choices``
    restricts fields whose values are known only at run time (e.g. the model registry's names)."""
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        if field.name in exclude:
            continue
        if defaults is not None:
            default = getattr(defaults, field.name)
        elif field.default is not dataclasses.MISSING:
            default = field.default
        else:
            default = None
        kwargs = _argument(hints[field.name], default)
        if choices and field.name in choices:
            kwargs["choices"] = list(choices[field.name])
        text = field.metadata.get("help", "").replace("%", "%%")  # argparse formats help with %
        flag = _flag(prefix, field.name)
        if kwargs.get("action") == "store_false":  # the field's help says what it does when on
            flag = "--no-" + flag[2:]
            text = f"{text} (on by default; this flag turns it off)"
        if field.name in required:
            kwargs["required"] = True
        elif default is not None and "action" not in kwargs:
            text = f"{text} (default {' '.join(map(str, default)) if isinstance(default, tuple) else default})"
        parser.add_argument(flag, dest=_dest(prefix, field.name), default=default, help=text.strip() or None,
                            **kwargs)


def dataclass_from_args(cls: type[T], args: argparse.Namespace, *, prefix: str = "", **overrides: Any) -> T:
    """The ``cls`` instance the flags of ``add_dataclass_arguments`` describe (validated by ``cls``)."""
    values = {}
    for field in dataclasses.fields(cls):
        dest = _dest(prefix, field.name)
        if hasattr(args, dest):
            value = getattr(args, dest)
            values[field.name] = tuple(value) if isinstance(value, list) else value
    values.update(overrides)
    return cls(**values)


def setup_logging(verbose: int = 0) -> None:
    """Our INFO lines and progress (``armor.progress``) by default; -v adds Ray's own start-up and
    INFO lines (``pipelines.ray_utils``), -vv debug; -q (``verbose < 0``) warnings and errors only."""
    from pipelines.ray_utils import show_ray_logs

    level = logging.DEBUG if verbose > 1 else logging.INFO if verbose >= 0 else logging.WARNING
    show_ray_logs(verbose >= 1)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S", stream=sys.stderr)
    # Libraries this project drives are chatty at INFO; their warnings still show.
    for noisy in ("urllib3", "matplotlib", "PIL", "filelock", "httpx", "faiss", "alembic", "mlflow.store",
                  "sentence_transformers", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="also show Ray's own start-up and INFO messages (-vv: debug)")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only: no progress")


def run_command(func: Callable[[argparse.Namespace], int | None], args: argparse.Namespace) -> int:
    setup_logging(-1 if getattr(args, "quiet", False) else getattr(args, "verbose", 0))
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        return int(func(args) or 0)
    except ArmorError as exc:
        print(f"armor: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("armor: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


def stage_main(add_arguments: Callable[[argparse.ArgumentParser], None],
               func: Callable[[argparse.Namespace], int | None], prog: str, description: str,
               argv: Sequence[str] | None = None) -> int:
    """Entrypoint for `python -m pipelines.<stage>` (what `ray job submit` runs)."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    add_arguments(parser)
    return run_command(func, parser.parse_args(argv))
