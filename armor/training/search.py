"""Search spaces and the one hyperparameter search every trainable model gets (equal budgets).

A model's search space lives with its registry entry (``ModelSpec.spaces``): a mapping from a
setting, named ``section.field`` ("bpr.learning_rate", "train.margin"), to a ``Dim``. A search
draws ``trials`` points from the space with a seeded Latin hypercube (every dimension's range is
cut into ``trials`` strata and each stratum is drawn once, so a handful of trials still covers
every range), fits a model at each point with early stopping on validation, and keeps the best by
validation NDCG@10 (``armor.training.selection``). Every model gets the same number of trials
through the same sampler, so no contender is tuned harder than another; a chosen value in the
outer tenth of its range, or at the end of an ordered choice, is reported as "at the edge": the
optimum may lie outside the range.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np

from armor.errors import ConfigError

# A chosen value this close to an end of its range (as a share of the range, on the dimension's
# own scale) is flagged: the search may have wanted to go further.
EDGE_SHARE = 0.1


@dataclasses.dataclass(frozen=True)
class Dim:
    """One searched setting: log-uniform or uniform over [low, high] (rounded for integers), or a choice."""

    kind: Literal["log", "uniform", "choice"]
    low: float = 0.0
    high: float = 0.0
    values: tuple[Any, ...] = ()
    integer: bool = False

    def __post_init__(self) -> None:
        if self.kind == "choice":
            if not self.values:
                raise ConfigError("a choice dimension needs at least one value")
        elif not (self.low < self.high and (self.kind != "log" or self.low > 0)):
            raise ConfigError(f"a {self.kind} dimension needs 0 < low < high (log) or low < high, "
                              f"got {self.low}, {self.high}")

    def value(self, u: float) -> Any:
        """The value at quantile ``u`` in [0, 1)."""
        if self.kind == "choice":
            return self.values[min(int(u * len(self.values)), len(self.values) - 1)]
        if self.kind == "log":
            x = math.exp(math.log(self.low) + u * (math.log(self.high) - math.log(self.low)))
        else:
            x = self.low + u * (self.high - self.low)
        return int(round(x)) if self.integer else float(x)

    def position(self, value: Any) -> float | None:
        """Where ``value`` sits in the range, 0 (low end) to 1 (high end); None for unordered choices."""
        if self.kind == "choice":
            if len(self.values) < 2 or not all(isinstance(v, (int, float)) for v in self.values):
                return None
            ordered = sorted(self.values)
            return ordered.index(value) / (len(ordered) - 1) if value in ordered else None
        if self.kind == "log":
            return (math.log(value) - math.log(self.low)) / (math.log(self.high) - math.log(self.low))
        return (value - self.low) / (self.high - self.low)

    def describe(self) -> str:
        if self.kind == "choice":
            return "{" + ", ".join(str(v) for v in self.values) + "}"
        scale = "log-uniform" if self.kind == "log" else "uniform"
        return f"{scale} [{self.low:g}, {self.high:g}]" + (" (integer)" if self.integer else "")


def log_uniform(low: float, high: float, integer: bool = False) -> Dim:
    return Dim("log", low, high, integer=integer)


def uniform(low: float, high: float, integer: bool = False) -> Dim:
    return Dim("uniform", low, high, integer=integer)


def choice(*values: Any) -> Dim:
    return Dim("choice", values=tuple(values))


Space = Mapping[str, Dim]


def split_key(key: str) -> tuple[str, str]:
    """("bpr", "learning_rate") from "bpr.learning_rate"."""
    section, dot, field = key.partition(".")
    if not dot or not section or not field:
        raise ConfigError(f"search space key {key!r}: must be section.field")
    return section, field


def sample_points(space: Space, trials: int, seed: int) -> list[dict[str, Any]]:
    """``trials`` points of ``space``, a seeded Latin hypercube: for each dimension the range is cut
    into ``trials`` equal strata (on its own scale) and every stratum is drawn once."""
    if trials < 1:
        raise ConfigError(f"--trials: must be >= 1, got {trials}")
    if not space:
        raise ConfigError("search space: must name at least one setting")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x5EA5C4]))
    names = sorted(space)
    quantiles = np.stack([(rng.permutation(trials) + rng.random(trials)) / trials for _ in names], axis=1)
    return [{name: space[name].value(float(u)) for name, u in zip(names, row)} for row in quantiles]


def at_edge(space: Space, point: Mapping[str, Any]) -> list[str]:
    """The settings of ``point`` that sit in the outer ``EDGE_SHARE`` of their range (or at an end of
    an ordered choice), each as "name=value (low end|high end of RANGE)"."""
    flagged = []
    for name, dim in space.items():
        if name not in point:
            continue
        where = dim.position(point[name])
        if where is None:
            continue
        share = 0.0 if dim.kind == "choice" else EDGE_SHARE
        if where <= share or where >= 1 - share:
            end = "low" if where <= share else "high"
            flagged.append(f"{name}={point[name]:g} ({end} end of {dim.describe()})")
    return flagged


def describe_space(space: Space) -> dict[str, str]:
    return {name: space[name].describe() for name in sorted(space)}


def check_space(space: Space, sections: Sequence[str], fields: Mapping[str, Sequence[str]]) -> None:
    """Every key names a section the model reads and a field of that section's config."""
    for key in space:
        section, field = split_key(key)
        if section not in sections:
            raise ConfigError(f"search space key {key!r}: the model does not read section {section!r}")
        if field not in fields[section]:
            raise ConfigError(f"search space key {key!r}: {section} has no setting {field!r}")
