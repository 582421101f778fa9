"""Model selection on validation only: the early-stopping score and the search over given points.

Everything that picks a hyperparameter, an epoch or a model goes through ``selection_score``,
which can only evaluate the validation split. Test is for reporting, once, after selection.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp

from armor.config import EvalConfig
from armor.data.splits import SplitData
from armor.errors import ConfigError, DataError
from armor.models.base import Recommender

if TYPE_CHECKING:
    from armor.training.trainer import Trainer

log = logging.getLogger(__name__)

SELECT_METRIC = "ndcg@10"
SELECT_SPLIT = "valid"


def validation_data(train: sp.csr_matrix, valid: sp.csr_matrix) -> SplitData:
    """A SplitData over (train, valid) alone, for early stopping when no full split is at hand.

    Its test matrix is empty, so nothing built on it can peek at a test split.
    """
    if train.shape != valid.shape:
        raise DataError(f"valid matrix has shape {valid.shape} but train has {train.shape}; both must be "
                        "(users x items) over the same catalogue")
    n_users, n_items = train.shape
    empty = sp.csr_matrix((n_users, n_items), dtype=np.float32)
    return SplitData(user_ids=np.arange(n_users), item_ids=np.arange(n_items),
                     train=sp.csr_matrix(train), valid=sp.csr_matrix(valid), test=empty)


def selection_score(model: Recommender, data: SplitData, eval_config: EvalConfig | None = None,
                    metric: str = SELECT_METRIC) -> float:
    """Validation ``metric`` of ``model``: means only, no bootstrap, since it runs every epoch."""
    # Looked up on the module at call time, so a test that wraps protocol.evaluate sees every call.
    from armor.eval import protocol

    k = int(metric.split("@")[1])
    config = dataclasses.replace(eval_config or EvalConfig(), ks=(k,), bootstrap=0)
    split = SELECT_SPLIT
    assert split != "test", "model selection must never evaluate on test"
    return protocol.evaluate(model, data, split, config).means[metric]


def grid_points(grid: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    if not grid:
        raise ConfigError("grid: must name at least one hyperparameter")
    for name, values in grid.items():
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or len(values) == 0:
            raise ConfigError(f"grid.{name}: must be a non-empty list of values, got {values!r}")
    names = list(grid)
    return [dict(zip(names, combo)) for combo in itertools.product(*(grid[n] for n in names))]


def grid_search(build: Callable[[dict[str, Any]], Recommender], grid: Mapping[str, Sequence[Any]],
                data: SplitData, eval_config: EvalConfig | None = None,
                metric: str = SELECT_METRIC) -> tuple[dict[str, Any], Recommender, list[dict[str, Any]]]:
    """``search`` over every point of ``grid``."""
    return search(build, grid_points(grid), data, eval_config, metric)


@dataclasses.dataclass(frozen=True)
class MedianStopping:
    """The median stopping rule (Golovin et al., Google Vizier, KDD 2017; Ray Tune's
    ``MedianStoppingRule``) for the search's sequential trials.

    After at least ``grace`` validations (default: the model's own early-stopping patience), a
    trial whose best validation score so far is below the median of the earlier trials' best
    scores up to the same epoch is stopped; it needs ``min_trials`` earlier trials to compare
    with. A trial that stopped before that epoch counts with its final best. Running bests rather
    than Ray Tune's running means, because early stopping keeps a trial's best epoch. A stopped
    trial can never win: its score is below the median of scores that earlier trials reached or
    beat. Every model's search applies the same rule, so budgets stay equal.
    """

    grace: int | None = None
    min_trials: int = 2

    def verdict(self, curve: Sequence[tuple[int, float]], earlier: Sequence[Sequence[tuple[int, float]]],
                grace: int) -> tuple[float, float] | None:
        """(this trial's best so far, the earlier trials' median) when the trial should stop, else None.

        ``curve`` and every ``earlier`` curve are (epoch, validation score) pairs in epoch order."""
        if len(curve) < (self.grace or grace) or len(earlier) < self.min_trials:
            return None
        epoch = curve[-1][0]
        mine = max(score for _, score in curve)
        theirs = [max((score for e, score in other if e <= epoch), default=-np.inf) for other in earlier]
        median = float(np.median(theirs))
        return (mine, median) if mine < median else None


class _TrialWatch:
    """A trial's ``on_epoch``: records its validation curve and stops it when ``prune`` says so."""

    def __init__(self, prune: MedianStopping | None, earlier: Sequence[Sequence[tuple[int, float]]], metric: str):
        self.prune, self.earlier, self.metric = prune, earlier, metric
        self.curve: list[tuple[int, float]] = []
        self.pruned_at: int | None = None

    def __call__(self, record: dict[str, float], trainer: Trainer) -> None:
        from armor.training.trainer import VALID_KEY

        if VALID_KEY not in record:
            return
        epoch = int(record["epoch"])
        self.curve.append((epoch, float(record[VALID_KEY])))
        found = None if self.prune is None else self.prune.verdict(self.curve, self.earlier, trainer.schedule.patience)
        if found is not None:
            self.pruned_at = epoch
            trainer.stop(f"pruned: best validation {self.metric} {found[0]:.4f} below the median {found[1]:.4f} of "
                         f"{len(self.earlier)} earlier trials at epoch {epoch}")


def search(build: Callable[[dict[str, Any]], Recommender], points: Sequence[Mapping[str, Any]],
           data: SplitData, eval_config: EvalConfig | None = None,
           metric: str = SELECT_METRIC,
           prune: MedianStopping | None = None) -> tuple[dict[str, Any], Recommender, list[dict[str, Any]]]:
    """Fit ``build(params)`` for every point and keep the best by validation ``metric``.

    Returns ``(best_params, best_model, table)``; ``table`` has one row per point, in order, with
    the params, the validation score, the fit time and, for trained models, the early-stopped
    epoch, the epochs run and, when ``prune`` stopped the trial, the epoch it stopped at
    ("pruned_at"). Ties go to the earlier point. Test is never evaluated.
    """
    from armor.models.base import TrainableRecommender
    from armor.training.trainer import fit

    eval_config = eval_config or EvalConfig()
    best: tuple[float, dict[str, Any], Recommender] | None = None
    table: list[dict[str, Any]] = []
    curves: list[list[tuple[int, float]]] = []
    for params in points:
        started = time.perf_counter()
        model = build(dict(params))
        watch = _TrialWatch(prune, curves, metric)
        model = fit(model, data.train, data=data, eval_config=eval_config,
                    on_epoch=watch if isinstance(model, TrainableRecommender) else None)
        fit_s = time.perf_counter() - started
        score = selection_score(model, data, eval_config, metric)
        row: dict[str, Any] = {**params, f"valid_{metric}": score, "fit_s": round(fit_s, 3)}
        if getattr(model, "best_epoch", None) is not None:
            row["best_epoch"] = model.best_epoch
            row["epochs_run"] = len(model.history)
        if watch.pruned_at is not None:
            row["pruned_at"] = watch.pruned_at
        curves.append(watch.curve)
        table.append(row)
        log.info("search %s: valid %s %.4f (%.1fs)", params, metric, score, fit_s)
        if np.isfinite(score) and (best is None or score > best[0]):
            best = (score, dict(params), model)
    if best is None:
        raise DataError(f"search: no configuration gave a finite validation {metric}; "
                        "is the validation split empty?")
    return best[1], best[2], table
