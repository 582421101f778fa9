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
from typing import Any

import numpy as np
import scipy.sparse as sp

from armor.config import EvalConfig
from armor.data.splits import SplitData
from armor.errors import ConfigError, DataError
from armor.models.base import Recommender

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


def search(build: Callable[[dict[str, Any]], Recommender], points: Sequence[Mapping[str, Any]],
           data: SplitData, eval_config: EvalConfig | None = None,
           metric: str = SELECT_METRIC) -> tuple[dict[str, Any], Recommender, list[dict[str, Any]]]:
    """Fit ``build(params)`` for every point and keep the best by validation ``metric``.

    Returns ``(best_params, best_model, table)``; ``table`` has one row per point, in order, with
    the params, the validation score, the fit time and, for trained models, the early-stopped
    epoch and the epochs run. Ties go to the earlier point. Test is never evaluated.
    """
    from armor.training.trainer import fit

    eval_config = eval_config or EvalConfig()
    best: tuple[float, dict[str, Any], Recommender] | None = None
    table: list[dict[str, Any]] = []
    for params in points:
        started = time.perf_counter()
        model = fit(build(dict(params)), data.train, data=data, eval_config=eval_config)
        fit_s = time.perf_counter() - started
        score = selection_score(model, data, eval_config, metric)
        row: dict[str, Any] = {**params, f"valid_{metric}": score, "fit_s": round(fit_s, 3)}
        if getattr(model, "best_epoch", None) is not None:
            row["best_epoch"] = model.best_epoch
            row["epochs_run"] = len(model.history)
        table.append(row)
        log.info("search %s: valid %s %.4f (%.1fs)", params, metric, score, fit_s)
        if np.isfinite(score) and (best is None or score > best[0]):
            best = (score, dict(params), model)
    if best is None:
        raise DataError(f"search: no configuration gave a finite validation {metric}; "
                        "is the validation split empty?")
    return best[1], best[2], table
