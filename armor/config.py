"""Typed, frozen configuration. YAML and command-line flags only fill these dataclasses.

Each dataclass validates itself in ``__post_init__`` so a bad value fails where it is set,
with the field's name in the message, not deep inside a training loop.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

from armor.errors import ConfigError

T = TypeVar("T")

SplitMethod = Literal["random", "temporal", "loo"]


def _check(condition: bool, field: str, message: str) -> None:
    if not condition:
        raise ConfigError(f"{field}: {message}")


@dataclasses.dataclass(frozen=True)
class SplitConfig:
    """How interactions become train / valid / test (the paper's protocol by default).

    Only positives (rating >= ``positive_threshold``) are split; a user is kept when they have at
    least ``min_user_positives`` of them, so every kept user has a profile, a validation item and
    a test item. "Latest" is defined by (timestamp, movie_id): MovieLens timestamps tie often and
    the tie-break must not depend on file order.
    """

    method: SplitMethod = "random"
    ratios: tuple[float, float, float] = (0.8, 0.1, 0.1)
    positive_threshold: float = 4.0
    min_user_positives: int = 5
    seed: int = 0

    def __post_init__(self) -> None:
        _check(self.method in ("random", "temporal", "loo"), "split.method",
               f"must be random, temporal or loo, got {self.method!r}")
        _check(len(self.ratios) == 3 and all(r > 0 for r in self.ratios), "split.ratios",
               f"must be three positive numbers, got {self.ratios!r}")
        _check(abs(sum(self.ratios) - 1.0) < 1e-6, "split.ratios",
               f"must sum to 1, got {sum(self.ratios)}")
        _check(0.5 <= self.positive_threshold <= 5.0, "split.positive_threshold",
               f"must be within the rating scale 0.5-5, got {self.positive_threshold}")
        _check(self.min_user_positives >= 3, "split.min_user_positives",
               "must be at least 3 (one train, one valid and one test item)")


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """Full-ranking evaluation settings."""

    ks: tuple[int, ...] = (5, 10, 20)
    batch_size: int = 2048
    bootstrap_samples: int = 1000
    confidence: float = 0.95
    seed: int = 0

    def __post_init__(self) -> None:
        _check(len(self.ks) > 0 and all(k >= 1 for k in self.ks), "eval.ks",
               f"must be positive integers, got {self.ks!r}")
        _check(self.batch_size >= 1, "eval.batch_size", "must be >= 1")
        _check(self.bootstrap_samples >= 0, "eval.bootstrap_samples", "must be >= 0")
        _check(0.0 < self.confidence < 1.0, "eval.confidence", "must be in (0, 1)")


def from_dict(cls: type[T], values: Mapping[str, Any] | None, where: str = "") -> T:
    """Build dataclass ``cls`` from a mapping, recursing into nested dataclasses.

    Unknown keys are an error naming the key, so a typo in a YAML file never silently
    falls back to a default.
    """
    values = dict(values or {})
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - set(fields))
    prefix = f"{where}." if where else ""
    if unknown:
        raise ConfigError(f"{prefix}{unknown[0]}: unknown setting; known: {', '.join(fields)}")
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for name, value in values.items():
        kwargs[name] = _coerce(hints[name], value, f"{prefix}{name}")
    return cls(**kwargs)


def _coerce(hint: Any, value: Any, where: str) -> Any:
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return from_dict(hint, value, where)
    origin = typing.get_origin(hint)
    if origin is tuple and isinstance(value, (list, tuple)):
        args = typing.get_args(hint)
        item = args[0] if args else Any
        return tuple(_coerce(item, v, where) for v in value)
    if origin in (typing.Union, types.UnionType):
        return value
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def from_yaml(cls: type[T], path: str | Path, section: str | None = None) -> T:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read config: {exc}") from exc
    if section is not None:
        data = data.get(section, {})
    return from_dict(cls, data, where=str(path) if section is None else f"{path}:{section}")


def merge(config: T, **overrides: Any) -> T:
    """A copy of ``config`` with ``overrides`` applied and validated (used for Tune samples)."""
    return dataclasses.replace(config, **overrides)  # type: ignore[type-var]


MissingModalityPolicy = Literal["exclude", "impute"]


@dataclasses.dataclass(frozen=True)
class ScrapeConfig:
    """TMDB enrichment. URLs default to the real TMDB API, image CDN and YouTube thumbnails.

    ``rate_limit`` is for the whole job: each of the ``actors`` gets an equal share.
    ``missing_modality``: "exclude" (the paper) drops movies lacking overview, poster or
    thumbnail from the multimodal benchmark; "impute" keeps them with the missing modality
    filled in downstream (and says how many).
    """

    api_url: str = "https://api.themoviedb.org"
    image_url: str = "https://image.tmdb.org/t/p"
    thumbnail_url: str = "https://img.youtube.com"
    poster_size: str = "w500"
    rate_limit: float = 40.0
    burst: int | None = None
    actors: int = 2
    batch_size: int = 16
    max_connections: int = 16
    max_attempts: int = 5
    link_threshold: float = 0.6
    missing_modality: MissingModalityPolicy = "exclude"

    def __post_init__(self) -> None:
        _check(self.rate_limit > 0, "scrape.rate_limit", f"must be > 0 requests/s, got {self.rate_limit}")
        _check(self.burst is None or self.burst >= 1, "scrape.burst", "must be >= 1")
        _check(self.actors >= 1, "scrape.actors", f"must be >= 1, got {self.actors}")
        _check(self.batch_size >= 1, "scrape.batch_size", f"must be >= 1, got {self.batch_size}")
        _check(self.max_connections >= 1, "scrape.max_connections", "must be >= 1")
        _check(self.max_attempts >= 1, "scrape.max_attempts", "must be >= 1")
        _check(0.0 <= self.link_threshold <= 1.0, "scrape.link_threshold", "must be in [0, 1]")
        _check(self.missing_modality in ("exclude", "impute"), "scrape.missing_modality",
               f"must be exclude or impute, got {self.missing_modality!r}")

    def per_actor_rate(self) -> tuple[float, int]:
        """(requests/s, burst) for one actor, so that all actors together stay under the limit."""
        rate = self.rate_limit / self.actors
        burst = self.burst if self.burst is not None else max(1, round(self.rate_limit / 4))
        return rate, max(1, burst // self.actors)
