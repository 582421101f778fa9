"""The item cold start as the literature runs it: no model is told what the split held out, the
cold setting ranks only movies without a training positive, and the flag-only reference ranker
(it knows which movies are new, nothing else) scores what chance predicts."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import scipy.sparse as sp

from armor.config import ArmorGraphConfig, BPRConfig, EvalConfig, FusionConfig, LightGCNConfig, TrainConfig
from armor.data.benchmark import load_benchmark
from armor.eval.protocol import evaluate, new_items, profile
from armor.models.baselines import NewFirst, Popularity, RandomRanker
from armor.models.registry import MODELS, ModelSettings
from armor.training.trainer import fit
from pipelines.train import TrainJob, build
from tests.threads import one_thread  # noqa: F401 - autouse for this module
from tests.workspaces import make_workspace

EVAL = EvalConfig(bootstrap=0, ks=(10,))
SETTINGS = ModelSettings.of(fusion=FusionConfig(dim=16, out_dim=8, heads=2),
                            train=TrainConfig(batch_size=64, steps_per_epoch=4),
                            bpr=BPRConfig(factors=8), lightgcn=LightGCNConfig(dim=8, layers=1, batch_size=512),
                            armor_graph=ArmorGraphConfig(dim=8, fusion_dim=8, heads=2, knn_k=3, reduce_dim=8,
                                                         batch_size=512))
USERS = np.arange(40)


@pytest.fixture(scope="module")
def cold(tmp_path_factory):
    root = make_workspace(tmp_path_factory.mktemp("cold") / "ws", split="cold")
    return root, load_benchmark(root, "cold")


def _answer_key_swapped(bench):
    """The same training matrix and features; different held-out movies, validation and test parts."""
    data, split = bench.data, bench.split
    rng = np.random.default_rng(7)
    shuffled = {part: sp.csr_matrix(getattr(data, part)[rng.permutation(data.n_users)]) for part in ("valid", "test")}
    others = rng.choice(data.item_ids, size=split.cold_items.size + split.cold_valid_items.size, replace=False)
    held = dataclasses.replace(split, cold_items=np.sort(others[:split.cold_items.size]),
                               cold_valid_items=np.sort(others[split.cold_items.size:]))
    return dataclasses.replace(bench, data=dataclasses.replace(data, **shuffled), split=held)


@pytest.mark.parametrize("name", MODELS)
def test_no_model_can_learn_which_movies_were_held_out(name, cold):
    """A model is built by the pipeline from its settings and the features, and fitted on the
    training matrix: with the held-out sets and the held-out parts swapped for others it is the
    same model, score for score."""
    root, bench = cold
    job = TrainJob(workspace=str(root), split="cold", model=name, settings=SETTINGS)
    swapped = _answer_key_swapped(bench)
    scores = []
    for benchmark in (bench, swapped):
        model = fit(build(job, benchmark), benchmark.data.train, epochs=2)
        scores.append(model.score(USERS, benchmark.data.train[USERS]))
    np.testing.assert_array_equal(scores[0], scores[1])


def test_new_means_no_positive_in_the_log_behind_the_profile(cold):
    _, bench = cold
    data = bench.data
    for split, log in (("valid", data.train), ("test", data.train + data.valid)):
        expected = np.flatnonzero(np.asarray(log.sum(axis=0)).ravel() == 0)
        np.testing.assert_array_equal(new_items(data, split), expected)
    held_out = data.item_index(bench.split.cold_items)
    assert np.isin(held_out, new_items(data, "test")).all()  # the held-out movies are new (as is any movie
    # nobody liked in train or validation: the definition above does not know which were held out)


def test_the_cold_setting_ranks_only_movies_without_a_training_positive(cold):
    _, bench = cold
    data = bench.data
    new = new_items(data, "test")
    popular = Popularity().fit(profile(data, "test"))  # ranks every new movie last on the whole catalogue
    everything = evaluate(popular, data, "test", EVAL, new=new)
    assert everything.means["new@10"] == 0.0
    in_cold = evaluate(popular, data, "test", EVAL, candidates=new, new=new)
    assert in_cold.means["new@10"] == 1.0  # every filled slot holds a new movie
    assert in_cold.means["recall@10"] > 0


def _expected_by_chance(data, new) -> tuple[float, float]:
    """Mean Recall@10 of a random order over the new movies, and its standard error over users."""
    truth = data.test
    users = np.flatnonzero(np.diff(truth.indptr) > 0)
    relevant = np.diff(truth.indptr)[users].astype(float)
    candidates = float(new.size)  # no new movie is in anyone's profile: it has no train or valid positive
    p = relevant / candidates
    variance = 10 * p * (1 - p) * (candidates - 10) / (candidates - 1) / relevant**2  # hypergeometric hits
    return min(10.0, candidates) / candidates, float(np.sqrt(variance.sum()) / users.size)


def test_the_flag_only_reference_ranker_scores_what_chance_predicts(cold):
    _, bench = cold
    data = bench.data
    new = new_items(data, "test")
    assert np.isin(data.test.indices, new).all()  # every test positive is on a new movie
    expected, se = _expected_by_chance(data, new)
    flag_only = evaluate(NewFirst().fit(profile(data, "test")), data, "test", EVAL, new=new).means
    assert abs(flag_only["recall@10"] - expected) < 4 * se, (flag_only["recall@10"], expected, se)
    assert flag_only["new@10"] == 1.0
    # In the cold setting every candidate is new: the flag carries nothing and it is the random ranker.
    random_cold = evaluate(RandomRanker(seed=1).fit(data.train), data, "test", EVAL, candidates=new).means
    assert abs(random_cold["recall@10"] - expected) < 4 * se, (random_cold["recall@10"], expected, se)
