"""Interaction-only baselines (BPR through implicit, LightGCN in torch) and validation-only tuning.

The synthetic "small" world plants taste factors that drive who likes what, so a collaborative
model must beat popularity on it; popularity and random are measured in the same run.
"""

import io
import time

import numpy as np
import pytest
import scipy.sparse as sp

from armor.config import BPRConfig, EvalConfig, LightGCNConfig, SplitConfig
from armor.data.splits import build_split_data, split_interactions
from armor.data.synthetic import SyntheticConfig, SyntheticWorld
from armor.errors import ArmorError, ConfigError, DataError
from armor.eval import protocol
from armor.eval.protocol import evaluate
from armor.models.base import Recommender, load_recommender
from armor.models.baselines import Popularity, RandomRanker
from armor.models.bpr import BPR, OrientationError
from armor.models.lightgcn import (
    LightGCN,
    NegativeSampler,
    normalized_adjacency,
    propagate,
)
from armor.training.selection import grid_search
from armor.training.trainer import Trainer

EVAL = EvalConfig(bootstrap=0)
# Quick settings for the 600 x 800 synthetic world (about 16k training positives).
BPR_QUICK = BPRConfig(factors=32, learning_rate=0.01, regularization=0.001, iterations=100)
LGCN_QUICK = LightGCNConfig(dim=32, layers=2, lr=1e-2, reg=1e-4, batch_size=1024, epochs=25, patience=4)


def valid_means(model, data):
    return evaluate(model, data, "valid", EVAL).means


def untimed(history):
    """A training history without its wall-clock seconds, which no two runs share."""
    return [{k: v for k, v in record.items() if k != "seconds"} for record in history]


@pytest.fixture(scope="module")
def small():
    world = SyntheticWorld(SyntheticConfig.preset("small"))
    tables = split_interactions(world.interactions(), SplitConfig(method="random", seed=0))
    return build_split_data(tables, world.movies()["movie_id"].to_numpy())


@pytest.fixture(scope="module")
def reference(small):
    return {"popularity": valid_means(Popularity().fit(small.train), small),
            "random": valid_means(RandomRanker(seed=0).fit(small.train), small)}


@pytest.fixture(scope="module")
def bpr_small(small):
    return BPR(BPR_QUICK, eval_every=10).fit(small.train, data=small, eval_config=EVAL)


@pytest.fixture(scope="module")
def lgcn_small(small):
    return LightGCN(LGCN_QUICK, num_threads=1).fit(small.train, data=small, eval_config=EVAL)


# --------------------------------------------------------------------------------------------
# Both models learn the planted tastes
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fixture", ["bpr_small", "lgcn_small"])
def test_collaborative_models_beat_popularity_and_random(request, small, reference, fixture):
    model = request.getfixturevalue(fixture)
    ndcg = valid_means(model, small)["ndcg@10"]
    pop, rnd = reference["popularity"]["ndcg@10"], reference["random"]["ndcg@10"]
    # Seen here: popularity 0.080, random 0.010, BPR 0.16, LightGCN 0.19.
    assert ndcg > 1.5 * pop, (ndcg, pop)
    assert ndcg > 10 * rnd, (ndcg, rnd)


def test_bpr_factors_are_user_by_item(small, bpr_small):
    # 598 users and 800 items: fitting implicit on item x user would swap these row counts.
    assert small.n_users != small.n_items
    assert bpr_small.user_factors.shape == (small.n_users, BPR_QUICK.factors + 1)
    assert bpr_small.item_factors.shape == (small.n_items, BPR_QUICK.factors + 1)
    # implicit's bias column: fixed at 1 for users, a learned bias for items.
    np.testing.assert_array_equal(bpr_small.user_factors[:, -1], 1.0)
    assert np.ptp(bpr_small.item_factors[:, -1]) > 0


def test_bpr_on_the_transpose_is_caught_with_a_clear_message(small):
    with pytest.raises(OrientationError, match="user x item"):
        BPR(BPR_QUICK).fit(small.train.T.tocsr(), data=small)
    # Without a split to compare against, the mismatch surfaces at the first score call, which
    # the evaluator makes: the error names the orientation instead of a cryptic matmul failure.
    transposed = BPR(BPRConfig(factors=8, iterations=2)).fit(small.train.T.tocsr())
    with pytest.raises(OrientationError, match="item x user"):
        evaluate(transposed, small, "valid", EVAL)
    assert issubclass(OrientationError, ArmorError)


def test_scores_are_dot_products_including_the_bias_column(small, bpr_small, lgcn_small):
    users = np.array([0, 5, 7])
    history = small.train[users]
    expected = bpr_small.user_factors[users] @ bpr_small.item_factors.T
    np.testing.assert_allclose(bpr_small.score(users, history), expected, rtol=1e-6)
    expected = lgcn_small.user_final[users] @ lgcn_small.item_final.T
    np.testing.assert_allclose(lgcn_small.score(users, history), expected, rtol=1e-6)


@pytest.mark.parametrize("fixture", ["bpr_small", "lgcn_small"])
def test_scores_are_fresh_float32_and_unseen_users_get_zeros(request, small, fixture):
    model = request.getfixturevalue(fixture)
    users = np.array([0, small.n_users + 3])
    history = sp.csr_matrix((2, small.n_items), dtype=np.float32)
    scores = model.score(users, history)
    assert scores.dtype == np.float32 and scores.shape == (2, small.n_items)
    np.testing.assert_array_equal(scores[1], 0.0)
    scores[:] = -1.0  # the evaluator masks in place: that must not reach the model
    assert not np.all(model.score(users, history)[0] == -1.0)


# --------------------------------------------------------------------------------------------
# LightGCN propagation against a dense computation
# --------------------------------------------------------------------------------------------


def dense_normalised(r: np.ndarray) -> np.ndarray:
    n_users, n_items = r.shape
    a = np.zeros((n_users + n_items,) * 2)
    a[:n_users, n_users:] = r
    a[n_users:, :n_users] = r.T
    degree = a.sum(axis=1)
    inv = np.zeros_like(degree)
    inv[degree > 0] = degree[degree > 0] ** -0.5
    return inv[:, None] * a * inv[None, :]


def test_normalised_adjacency_matches_dense_on_a_hand_made_graph():
    # 3 users x 4 items; item 3 is liked by nobody (degree 0 must give a zero row, not NaN).
    r = np.array([[1, 1, 0, 0],
                  [1, 0, 1, 0],
                  [0, 1, 1, 0]], dtype=np.float32)
    adjacency = normalized_adjacency(sp.csr_matrix(r)).to_dense().numpy()
    np.testing.assert_allclose(adjacency, dense_normalised(r), rtol=1e-6)
    # By hand: every user and items 0-2 have degree 2, so each edge weighs 1/sqrt(2*2) = 0.5.
    assert adjacency[0, 3 + 0] == pytest.approx(0.5)
    assert adjacency[3 + 0, 1] == pytest.approx(0.5)
    assert adjacency[0, 3 + 2] == 0.0
    np.testing.assert_array_equal(adjacency[3 + 3], 0.0)
    np.testing.assert_allclose(adjacency, adjacency.T)


def test_propagation_is_the_mean_of_layers_0_to_L():
    import torch

    r = np.array([[1, 0, 0, 1],
                  [1, 1, 0, 0],
                  [0, 1, 1, 1]], dtype=np.float32)
    a_hat = dense_normalised(r)
    e0 = np.random.default_rng(0).normal(size=(7, 5)).astype(np.float32)
    adjacency = normalized_adjacency(sp.csr_matrix(r))
    for layers in (0, 1, 3):
        layers_dense = [e0]
        for _ in range(layers):
            layers_dense.append(a_hat @ layers_dense[-1])
        expected = np.mean(layers_dense, axis=0)  # alpha_k = 1 / (L + 1)
        got = propagate(adjacency, torch.from_numpy(e0), layers).numpy()
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_negative_sampler_never_returns_a_training_positive():
    rng = np.random.default_rng(0)
    dense = rng.random((20, 12)) < 0.7  # most items liked: rejection sampling has to work
    dense[:, 0] = False  # every user has at least one negative
    train = sp.csr_matrix(dense.astype(np.float32))
    sampler = NegativeSampler(train)
    users = np.repeat(np.arange(20), 50)
    negatives = sampler(rng, users)
    assert not dense[users, negatives].any()
    assert np.unique(negatives).size > 1
    full = sp.csr_matrix(np.ones((2, 3), dtype=np.float32))
    with pytest.raises(DataError, match="every item"):
        NegativeSampler(full)(rng, np.array([0, 1]))


# --------------------------------------------------------------------------------------------
# Early stopping keeps the best validation epoch
# --------------------------------------------------------------------------------------------


def check_best_of_history(model, small):
    scores = [h["val_ndcg@10"] for h in model.history]
    best = int(np.argmax(scores))
    # It stopped after the peak (patience ran out), so the kept model is not simply the last one.
    assert best < len(scores) - 1
    assert model.history[best]["epoch"] == model.best_epoch
    assert model.best_score == pytest.approx(scores[best])
    assert valid_means(model, small)["ndcg@10"] == pytest.approx(scores[best], abs=1e-9)
    assert scores[-1] < scores[best]


def test_lightgcn_early_stopping_returns_the_best_validation_epoch(small):
    # A large learning rate overfits quickly, so validation peaks well before `epochs`.
    config = LightGCNConfig(dim=32, layers=2, lr=5e-2, reg=1e-5, batch_size=1024, epochs=40, patience=3)
    model = LightGCN(config, num_threads=1).fit(small.train, data=small)
    assert len(model.history) < config.epochs
    assert [h["epoch"] for h in model.history] == list(range(1, len(model.history) + 1))
    check_best_of_history(model, small)


def test_bpr_early_stopping_returns_the_best_validation_iteration(small):
    model = BPR(BPRConfig(factors=32, learning_rate=0.1, regularization=0.0, iterations=300),
                eval_every=5, patience=3).fit(small.train, data=small)
    iterations = [h["iterations"] for h in model.history]
    assert iterations == list(range(5, 5 * len(iterations) + 1, 5)) and iterations[-1] < 300
    check_best_of_history(model, small)
    assert model.best_iteration == 5 * model.best_epoch


def test_valid_matrix_alone_drives_early_stopping(small, monkeypatch):
    seen = []
    real = protocol.evaluate

    def recording(model, data, split, *args, **kwargs):
        seen.append(split)
        assert data.test.nnz == 0  # built from (train, valid) only
        return real(model, data, split, *args, **kwargs)

    monkeypatch.setattr(protocol, "evaluate", recording)
    model = BPR(BPRConfig(factors=8, iterations=20), eval_every=10).fit(small.train, small.valid)
    assert seen == ["valid", "valid"] and len(model.history) == 2


# --------------------------------------------------------------------------------------------
# Grid search chooses on validation and never evaluates test
# --------------------------------------------------------------------------------------------


class Oracle(Recommender):
    """Scores one split's held-out items highest: perfect on that split, useless elsewhere."""

    name = "oracle-test-only"

    def __init__(self, truth: sp.csr_matrix):
        self.truth = truth

    def fit(self, train, valid=None):
        return self

    def score(self, users, history):
        return self.truth[users].toarray().astype(np.float32)


@pytest.fixture
def evaluate_calls(monkeypatch):
    calls = []
    real = protocol.evaluate

    def recording(model, data, split, *args, **kwargs):
        calls.append(split)
        return real(model, data, split, *args, **kwargs)

    monkeypatch.setattr(protocol, "evaluate", recording)
    return calls


def test_grid_search_picks_by_validation_not_test(small, evaluate_calls):
    # A selection by test would pick the test oracle; by validation, the validation oracle.
    models = {"test-oracle": lambda: Oracle(small.test), "popularity": Popularity,
              "valid-oracle": lambda: Oracle(small.valid), "random": lambda: RandomRanker(seed=1)}
    best_params, best_model, table = grid_search(lambda p: models[p["model"]](), {"model": list(models)},
                                                 small, EVAL)
    assert best_params == {"model": "valid-oracle"}
    assert isinstance(best_model, Oracle) and best_model.truth is small.valid
    assert [row["model"] for row in table] == list(models)
    assert table[2]["valid_ndcg@10"] == pytest.approx(1.0)
    assert evaluate_calls and set(evaluate_calls) == {"valid"}


def test_grid_search_over_bpr_and_lightgcn_never_touches_test(small, evaluate_calls):
    grid = {"factors": [8, 32], "learning_rate": [0.01], "iterations": [40]}
    best_params, best_model, table = grid_search(
        lambda p: BPR(BPRConfig(**p), eval_every=20), grid, small, EVAL)
    scores = [row["valid_ndcg@10"] for row in table]
    winner = table[int(np.argmax(scores))]
    assert len(table) == 2 and best_params == {name: winner[name] for name in grid}
    assert valid_means(best_model, small)["ndcg@10"] == pytest.approx(max(scores))
    assert all("best_epoch" in row for row in table)

    _, lgcn, lgcn_table = grid_search(
        lambda p: LightGCN(LightGCNConfig(dim=16, batch_size=2048, epochs=3, **p), num_threads=1),
        {"layers": [1], "lr": [1e-2]}, small, EVAL)
    assert lgcn_table[0]["best_epoch"] == lgcn.best_epoch
    assert "test" not in evaluate_calls and evaluate_calls.count("valid") > 4


def test_grid_search_rejects_an_empty_grid(small):
    with pytest.raises(ConfigError, match="grid.factors"):
        grid_search(lambda p: Popularity(), {"factors": []}, small)
    with pytest.raises(ConfigError):
        grid_search(lambda p: Popularity(), {}, small)


# --------------------------------------------------------------------------------------------
# Persistence and determinism
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fixture", ["bpr_small", "lgcn_small"])
def test_save_load_round_trip_gives_identical_scores(request, small, tmp_path, fixture):
    model = request.getfixturevalue(fixture)
    model.save(tmp_path / "model")
    loaded = load_recommender(tmp_path / "model")
    assert type(loaded) is type(model) and loaded.config == model.config
    users = np.arange(small.n_users)
    np.testing.assert_array_equal(loaded.score(users, small.train), model.score(users, small.train))


def test_bpr_is_deterministic_for_a_seed(small):
    config = BPRConfig(factors=16, iterations=20, seed=3)
    users = np.arange(50)
    a = BPR(config, eval_every=10).fit(small.train, data=small).score(users, small.train[users])
    b = BPR(config, eval_every=10).fit(small.train, data=small).score(users, small.train[users])
    c = BPR(BPRConfig(factors=16, iterations=20, seed=4), eval_every=10).fit(small.train, data=small)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c.score(users, small.train[users]))


def test_lightgcn_is_deterministic_for_a_seed(small):
    config = LightGCNConfig(dim=16, layers=2, lr=1e-2, batch_size=2048, epochs=3, seed=3)
    users = np.arange(50)
    a = LightGCN(config, num_threads=1).fit(small.train).score(users, small.train[users])
    b = LightGCN(config, num_threads=1).fit(small.train).score(users, small.train[users])
    other = LightGCNConfig(dim=16, layers=2, lr=1e-2, batch_size=2048, epochs=3, seed=4)
    c = LightGCN(other, num_threads=1).fit(small.train).score(users, small.train[users])
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_lightgcn_resumed_from_an_epoch_state_ends_like_an_uninterrupted_run(small):
    import torch

    config = LightGCNConfig(dim=16, layers=2, lr=5e-2, reg=1e-5, batch_size=1024, epochs=12, patience=3)
    states, records = {}, []

    def keep(record, trainer):
        records.append(record)
        states[record["epoch"]] = trainer.state_dict()

    whole = Trainer(LightGCN(config, num_threads=1), small.train, small).fit(on_epoch=keep)
    assert [r["epoch"] for r in records] == [h["epoch"] for h in whole.history]  # one call per epoch

    def resumed_from(state):
        trainer = Trainer(LightGCN(config, num_threads=1), small.train, small)
        buffer = io.BytesIO()  # round-trip through torch.save, as a Ray Train checkpoint does
        torch.save(state, buffer)
        buffer.seek(0)
        trainer.load_state_dict(torch.load(buffer, weights_only=False))
        return trainer.fit()

    resumed = resumed_from(states[2])
    assert untimed(resumed.history) == untimed(whole.history)
    assert resumed.best_epoch == whole.best_epoch
    np.testing.assert_array_equal(resumed.item_final, whole.item_final)
    np.testing.assert_array_equal(resumed.user_final, whole.user_final)
    # A state from after early stopping resumes to the same answer without training further.
    last = resumed_from(states[max(states)])
    np.testing.assert_array_equal(last.item_final, whole.item_final)


def test_lightgcn_refuses_a_state_from_another_graph(small):
    states = {}
    Trainer(LightGCN(LightGCNConfig(dim=8, epochs=1), num_threads=1), small.train).fit(
        on_epoch=lambda record, trainer: states.setdefault("s", trainer.state_dict()))
    trainer = Trainer(LightGCN(LightGCNConfig(dim=16, epochs=1), num_threads=1), small.train)
    with pytest.raises(DataError, match="resume state has embeddings of shape"):
        trainer.load_state_dict(states["s"])


def test_fit_restores_torch_threads(small):
    import torch

    before = torch.get_num_threads()
    LightGCN(LightGCNConfig(dim=8, epochs=1), num_threads=1).fit(small.train)
    assert torch.get_num_threads() == before


def test_bad_settings_name_the_setting():
    with pytest.raises(ConfigError, match="eval_every"):
        BPR(eval_every=0)
    with pytest.raises(ConfigError, match="lightgcn.layers"):
        LightGCN({"layers": -1})
    with pytest.raises(ArmorError, match="before fit"):
        LightGCN().score(np.array([0]), sp.csr_matrix((1, 3)))


# --------------------------------------------------------------------------------------------
# Real ML-100K sanity run
# --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_ml100k_cf_models_beat_popularity_on_validation_hr():
    from armor.data.movielens import embedded_ml100k_dir, load_movielens

    ml = load_movielens(embedded_ml100k_dir())
    data = build_split_data(split_interactions(ml.interactions, SplitConfig(method="random", seed=0)),
                            ml.movies["movie_id"].to_numpy())
    popularity = valid_means(Popularity().fit(data.train), data)["hr@10"]
    started = time.perf_counter()
    bpr = BPR(BPRConfig(factors=64, learning_rate=0.01, regularization=0.001, iterations=200),
              eval_every=10).fit(data.train, data=data)
    bpr_seconds = time.perf_counter() - started
    started = time.perf_counter()
    lgcn = LightGCN(LightGCNConfig(dim=64, layers=2, lr=1e-2, reg=1e-4, batch_size=4096, epochs=30,
                                   patience=3), num_threads=1).fit(data.train, data=data)
    lgcn_seconds = time.perf_counter() - started
    bpr_hr = valid_means(bpr, data)["hr@10"]
    lgcn_hr = valid_means(lgcn, data)["hr@10"]
    print(f"\nML-100K valid HR@10: popularity {popularity:.4f}, BPR {bpr_hr:.4f} "
          f"(iteration {bpr.best_iteration}, {bpr_seconds:.1f}s), LightGCN {lgcn_hr:.4f} "
          f"(epoch {lgcn.best_epoch}, {lgcn_seconds:.1f}s)")
    # Seen here: popularity 0.43, BPR 0.56, LightGCN 0.6.
    assert bpr_hr > popularity + 0.08
    assert lgcn_hr > popularity + 0.08
