"""The search's median stopping rule: which trials it stops, that a stopped trial never wins, and
that it changes nothing for trials above the median."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp

from armor.data.splits import SplitData
from armor.models.base import TrainableRecommender
from armor.training import selection, trainer
from armor.training.schedule import Schedule
from armor.training.selection import MedianStopping


def test_verdict_waits_for_the_grace_and_for_enough_earlier_trials():
    rule = MedianStopping(min_trials=2)
    earlier = [[(1, 0.5), (2, 0.6)], [(1, 0.4), (2, 0.7)]]
    assert rule.verdict([(1, 0.1)], earlier, grace=2) is None  # one validation, grace 2
    assert rule.verdict([(1, 0.1), (2, 0.1)], earlier[:1], grace=2) is None  # one earlier trial
    assert rule.verdict([(1, 0.1), (2, 0.1)], earlier, grace=2) == (0.1, pytest.approx(0.65))


def test_verdict_compares_running_bests_at_the_same_epoch():
    rule = MedianStopping(grace=1, min_trials=1)
    late_bloomer = [(1, 0.1), (2, 0.1), (3, 0.9)]
    # At epoch 2 the earlier trial's best so far is 0.1: a trial at 0.2 is not below it.
    assert rule.verdict([(1, 0.2), (2, 0.2)], [late_bloomer], grace=1) is None
    assert rule.verdict([(1, 0.2), (2, 0.2), (3, 0.2)], [late_bloomer], grace=1) == (0.2, 0.9)
    # A trial that early-stopped at epoch 2 counts with its final best at later epochs.
    assert rule.verdict([(1, 0.1), (2, 0.1), (3, 0.3), (4, 0.3)], [[(1, 0.4), (2, 0.5)]], grace=1) == (0.3, 0.5)


class Scripted(TrainableRecommender):
    """A model whose validation score after epoch e is ``curve[e - 1]`` (read by the patched
    ``selection_score``), with the trainer's real early stopping and best-epoch snapshot."""

    name = "scripted"

    def __init__(self, curve: list[float], patience: int = 3):
        self.curve, self.patience, self.epoch = list(curve), patience, 0

    def schedule(self) -> Schedule:
        return Schedule(epochs=len(self.curve), patience=self.patience, seed=0)

    def begin(self, train: sp.csr_matrix, streams: Any, *, rank: int = 0, world_size: int = 1) -> None:
        self.epoch = 0

    def train_epoch(self, epoch: int, streams: Any) -> dict[str, float]:
        self.epoch = epoch + 1
        return {"loss": 1.0 / self.epoch}

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch = state["epoch"]

    def snapshot(self) -> int:
        return self.epoch

    def restore(self, snapshot: int) -> None:
        self.epoch = snapshot

    def score(self, users: np.ndarray, history: sp.csr_matrix) -> np.ndarray:
        raise AssertionError("the scripted model is scored through the patched selection_score only")

    @property
    def validation(self) -> float:
        return self.curve[self.epoch - 1]


@pytest.fixture
def scripted_scores(monkeypatch):
    def score(model, data, eval_config=None, metric=selection.SELECT_METRIC):
        return model.validation

    monkeypatch.setattr(trainer, "selection_score", score)
    monkeypatch.setattr(selection, "selection_score", score)


def tiny_data() -> SplitData:
    train = sp.csr_matrix(np.eye(3, dtype=np.float32))
    return SplitData(user_ids=np.arange(3), item_ids=np.arange(3), train=train, valid=train.copy(),
                     test=sp.csr_matrix((3, 3), dtype=np.float32))


CURVES = {
    "a": [0.10, 0.20, 0.30, 0.35, 0.36, 0.36, 0.36, 0.36],
    "b": [0.12, 0.22, 0.32, 0.40, 0.41, 0.41, 0.41, 0.41],
    "slow": [0.01, 0.02, 0.03, 0.04, 0.50, 0.60, 0.60, 0.60],  # would have won, had it been let run
    "good": [0.20, 0.30, 0.45, 0.50, 0.55, 0.55, 0.55, 0.55],
}


def run_search(prune: MedianStopping | None, order: list[str]):
    return selection.search(lambda p: Scripted(CURVES[p["curve"]]), [{"curve": c} for c in order], tiny_data(),
                            prune=prune)


def test_a_trial_below_the_median_is_stopped_after_the_grace(scripted_scores):
    chosen, model, table = run_search(MedianStopping(), ["a", "b", "slow", "good"])
    rows = {row["curve"]: row for row in table}
    # "slow" is below the median of a and b at its third validation (grace = its patience, 3).
    assert rows["slow"]["pruned_at"] == 3 and rows["slow"]["epochs_run"] == 3
    assert "pruned_at" not in rows["a"] and "pruned_at" not in rows["b"]  # too few earlier trials
    assert "pruned_at" not in rows["good"] and rows["good"]["epochs_run"] == len(CURVES["good"])  # above it
    assert chosen == {"curve": "good"} and model.validation == pytest.approx(0.55)


def test_without_the_rule_every_trial_runs_and_the_late_bloomer_wins(scripted_scores):
    chosen, _, table = run_search(None, ["a", "b", "slow", "good"])
    assert not any("pruned_at" in row for row in table)
    assert chosen == {"curve": "slow"}  # the price of the rule: a slow starter is never seen to win


def test_a_stopped_trial_is_never_chosen(scripted_scores):
    # Every later trial below the median of the first two: all are stopped, the best earlier one wins.
    chosen, model, table = run_search(MedianStopping(grace=1), ["b", "a", "slow", "slow"])
    assert [row.get("pruned_at") for row in table] == [None, None, 1, 1]
    assert chosen == {"curve": "b"} and model.validation == pytest.approx(0.41)
