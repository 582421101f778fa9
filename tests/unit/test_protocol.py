"""Full-ranking evaluation: exclusions, hand-computed results, and the random baseline's expectation."""

import numpy as np
import pytest
import scipy.sparse as sp

from armor.config import EvalConfig, SplitConfig
from armor.data.splits import SplitData, build_split_data, split_interactions
from armor.eval.protocol import evaluate
from armor.models.base import load_recommender
from armor.models.baselines import Popularity, RandomRanker
from tests.fixed_scores import FixedScores


def tiny_split():
    # 2 users, 6 items.
    train = sp.csr_matrix(np.array([[1, 1, 0, 0, 0, 0], [0, 0, 0, 0, 0, 1]], dtype=np.float32))
    valid = sp.csr_matrix(np.array([[0, 0, 1, 0, 0, 0], [1, 0, 0, 0, 0, 0]], dtype=np.float32))
    test = sp.csr_matrix(np.array([[0, 0, 0, 1, 0, 0], [0, 1, 0, 0, 1, 0]], dtype=np.float32))
    return SplitData(user_ids=np.array([10, 20]), item_ids=np.arange(1, 7), train=train, valid=valid, test=test)


def test_training_and_validation_items_are_excluded_on_test():
    data = tiny_split()
    # user 0 scores its train items (0, 1) and valid item (2) highest: all must be skipped,
    # leaving the test item 3 at rank 1.
    scores = [[9, 8, 7, 6, 5, 4], [9, 1, 2, 3, 0.5, 8]]
    result = evaluate(FixedScores(scores), data, "test", EvalConfig(ks=(1, 2), bootstrap=0))
    # user 1: train {5} and valid {0} excluded -> ranking 3, 2, 1, 4 ; test {1, 4}
    assert result.per_user["recall@1"].tolist() == [1.0, 0.0]
    assert result.per_user["hr@2"].tolist() == [1.0, 0.0]
    full = evaluate(FixedScores(scores), data, "test", EvalConfig(ks=(4,), bootstrap=0))
    assert full.per_user["recall@4"].tolist() == [1.0, 1.0]
    # on valid, only training items are excluded: user 0's valid item 2 is at rank 1
    on_valid = evaluate(FixedScores(scores), data, "valid", EvalConfig(ks=(1,), bootstrap=0))
    assert on_valid.per_user["recall@1"].tolist() == [1.0, 1.0]  # user 1's valid item 0 scores 9


def test_coverage_counts_distinct_recommended_items():
    data = tiny_split()
    scores = [[9, 8, 7, 6, 5, 4], [9, 1, 2, 3, 0.5, 8]]
    result = evaluate(FixedScores(scores), data, "test", EvalConfig(ks=(1,), bootstrap=0))
    assert result.coverage["coverage@1"] == pytest.approx(1 / 6)  # both users get item 3 first
    result = evaluate(FixedScores(scores), data, "test", EvalConfig(ks=(3,), bootstrap=0))
    assert result.coverage["coverage@3"] == pytest.approx(5 / 6)  # {3, 4, 5} and {3, 2, 1}



def test_popularity_bias_is_counted_in_the_log_behind_the_profile():
    """ARP counts each movie's positives in train on validation and in train + validation on test;
    Gini is over how often each rankable movie is recommended; the time in model.score is kept."""
    data = tiny_split()
    scores = [[9, 8, 7, 6, 5, 4], [9, 1, 2, 3, 0.5, 8]]
    config = EvalConfig(ks=(3,), bootstrap=0)
    # test: user 0 ranks 3, 4, 5; user 1 ranks 3, 2, 1. Train + validation counts: 1 for movies 0, 1, 2, 5.
    result = evaluate(FixedScores(scores), data, "test", config)
    assert result.per_user["arp@3"] == pytest.approx([1 / 3, 2 / 3])
    # exposure 0, 1, 1, 2, 1, 1 -> sorted sum of (2j - 7) x_j = 10, over 6 * 6
    assert result.coverage["gini@3"] == pytest.approx(10 / 36)
    assert result.score_seconds > 0
    # validation: user 0 ranks 2, 3, 4 (train counts 0); user 1 ranks 0, 3, 2 (movie 0: 1 in train)
    on_valid = evaluate(FixedScores(scores), data, "valid", config)
    assert on_valid.per_user["arp@3"] == pytest.approx([0.0, 1 / 3])
    # with candidates, Gini is over the rankable movies only: both users get movie 3 -> exposure (2, 0)
    only = evaluate(FixedScores(scores), data, "test", EvalConfig(ks=(1,), bootstrap=0), candidates=np.array([3, 4]))
    assert only.coverage["gini@1"] == pytest.approx(0.5)



def test_batching_does_not_change_results():
    rng = np.random.default_rng(0)
    n_users, n_items = 57, 40
    dense = rng.random((n_users, n_items))
    train = sp.csr_matrix((dense < 0.2).astype(np.float32))
    valid = sp.csr_matrix(((dense >= 0.2) & (dense < 0.25)).astype(np.float32))
    test = sp.csr_matrix(((dense >= 0.25) & (dense < 0.3)).astype(np.float32))
    data = SplitData(np.arange(n_users), np.arange(n_items), train, valid, test)
    model = FixedScores(rng.random((n_users, n_items)))
    a = evaluate(model, data, "test", EvalConfig(batch_size=5, bootstrap=0))
    b = evaluate(model, data, "test", EvalConfig(batch_size=1000, bootstrap=0))
    for key in a.per_user:
        np.testing.assert_allclose(a.per_user[key], b.per_user[key])
    assert a.coverage == b.coverage


def synthetic_split(method):
    rng = np.random.default_rng(1)
    import pyarrow as pa

    from armor.data.schema import INTERACTIONS_SCHEMA

    n_users, n_movies = 600, 120
    users, movies = [], []
    for u in range(n_users):
        chosen = rng.choice(n_movies, size=rng.integers(5, 40), replace=False)
        users.extend([u] * chosen.size)
        movies.extend(chosen.tolist())
    n = len(users)
    t = pa.table({"user_id": users, "movie_id": movies, "rating": np.full(n, 5.0),
                  "timestamp": rng.integers(0, 10**6, n)}, schema=INTERACTIONS_SCHEMA)
    return build_split_data(split_interactions(t, SplitConfig(method=method)), np.arange(n_movies))


@pytest.mark.parametrize("method", ["loo", "random"])
def test_random_baseline_matches_its_analytic_expectation(method):
    # For a uniformly random ranking, each relevant item lands in the top K with probability
    # K / C_u, C_u = candidates left after exclusion; so E[Recall@K] = mean_u K / C_u, also with
    # several test items per user (Var[recall_u] <= p_u (1 - p_u) / n_u). Check within 4 sigma.
    data = synthetic_split(method)
    excluded = np.asarray((data.train + data.valid).sum(axis=1)).ravel()
    candidates = data.n_items - excluded
    n_test = np.diff(data.test.indptr)
    for k in (5, 10, 20):
        p = k / candidates
        seeds = range(30)
        observed = np.mean([evaluate(RandomRanker(seed=s).fit(data.train), data, "test",
                                     EvalConfig(ks=(k,), bootstrap=0)).per_user[f"recall@{k}"].mean()
                            for s in seeds])
        sd = np.sqrt((p * (1 - p) / n_test).sum()) / p.size / np.sqrt(len(seeds))
        assert abs(observed - p.mean()) < 4 * sd
        assert 4 * sd < 0.25 * p.mean()  # the check has power: it would catch a 25 % bias


def test_popularity_ranks_by_training_count():
    train = sp.csr_matrix(np.array([[1, 1, 0, 0], [0, 1, 0, 1], [0, 1, 0, 1]], dtype=np.float32))
    model = Popularity().fit(train)
    assert model.score(np.array([0]), train[[0]]).tolist() == [[1.0, 3.0, 0.0, 2.0]]


def test_random_scores_do_not_depend_on_batching_and_vary_by_seed():
    model = RandomRanker(seed=3).fit(sp.csr_matrix((10, 50)))
    full = model.score(np.arange(10), None)
    part = model.score(np.array([7, 2]), None)
    np.testing.assert_array_equal(full[[7, 2]], part)
    other = RandomRanker(seed=4).fit(sp.csr_matrix((10, 50))).score(np.arange(10), None)
    assert not np.array_equal(full, other)
    assert 0.0 <= full.min() and full.max() < 1.0


@pytest.mark.parametrize("model", [Popularity(), RandomRanker(seed=5)])
def test_baselines_save_and_load(tmp_path, model):
    train = sp.random(20, 30, density=0.2, format="csr", random_state=0)
    train.data[:] = 1
    model.fit(train)
    model.save(tmp_path / "m")
    loaded = load_recommender(tmp_path / "m")
    users = np.arange(20)
    np.testing.assert_array_equal(loaded.score(users, train), model.score(users, train))


def test_relevant_items_restricts_hits_but_not_the_ranking():
    data = tiny_split()
    scores = [[9, 8, 7, 6, 5, 4], [9, 1, 2, 3, 0.5, 8]]
    # user 1's test items are 1 and 4; counting only item 4 as relevant, its rank is 4
    result = evaluate(FixedScores(scores), data, "test", EvalConfig(ks=(3, 4), bootstrap=0),
                      relevant_items=np.array([4]))
    assert result.users.tolist() == [1]  # user 0 has no relevant test item left
    assert result.per_user["recall@3"].tolist() == [0.0]
    assert result.per_user["recall@4"].tolist() == [1.0]


# --------------------------------------------------------------------------------------------
# The profile rule (paper §5) and ties that never reward a model
# --------------------------------------------------------------------------------------------


class RecordsHistory(FixedScores):
    """Remembers the profile the evaluator hands it."""

    def score(self, users, history):
        self.seen = getattr(self, "seen", {})
        for row, user in enumerate(users):
            self.seen[int(user)] = set(history[row].indices.tolist())
        return super().score(users, history)


def test_the_profile_is_train_on_validation_and_train_plus_validation_on_test():
    data = tiny_split()
    model = RecordsHistory(np.zeros((2, 6)))
    evaluate(model, data, "valid", EvalConfig(ks=(1,), bootstrap=0))
    assert model.seen == {0: {0, 1}, 1: {5}}  # training positives only
    model.seen = {}
    evaluate(model, data, "test", EvalConfig(ks=(1,), bootstrap=0))
    assert model.seen == {0: {0, 1, 2}, 1: {5, 0}}  # every positive but the test items


def test_ties_are_ordered_at_random_per_user_not_by_movie_index():
    rng = np.random.default_rng(0)
    n_users, n_items = 300, 50
    train = sp.csr_matrix((n_users, n_items), dtype=np.float32)
    test = sp.csr_matrix((rng.random((n_users, n_items)) < 0.1).astype(np.float32))
    data = SplitData(np.arange(n_users) + 1000, np.arange(n_items) + 1, train, train.copy(), test)
    result = evaluate(FixedScores(np.zeros((n_users, n_items))), data, "test", EvalConfig(ks=(1,), bootstrap=0))
    # Every item ties: the first-ranked item must vary across users (lowest index would always win).
    firsts = []
    for batch in (np.arange(0, 150), np.arange(150, 300)):
        from armor.eval.metrics import TieOrder, top_k

        idx, _ = top_k(np.zeros((batch.size, n_items), np.float32), 1, TieOrder(0, data.user_ids[batch], data.item_ids))
        firsts.extend(idx[:, 0].tolist())
    assert len(set(firsts)) > 30
    # A user's order does not depend on the batch it is scored in.
    one = top_k(np.zeros((1, n_items), np.float32), 5, TieOrder(0, data.user_ids[[7]], data.item_ids))[0]
    many = top_k(np.zeros((20, n_items), np.float32), 5, TieOrder(0, data.user_ids[:20], data.item_ids))[0]
    np.testing.assert_array_equal(one[0], many[7])
    # and hits of a constant model are what chance predicts: P(first item relevant) = mean share.
    expected = float(np.mean(np.diff(test.indptr)[np.diff(test.indptr) > 0] / n_items))
    assert abs(np.mean(result.per_user["hr@1"]) - expected) < 0.05


def test_ties_at_the_kth_score_are_filled_by_tie_key_and_scored_items_come_first():
    from armor.eval.metrics import TieOrder, top_k

    scores = np.array([[1.0, 3.0, 0.0, 0.0, 0.0, 0.0, 2.0, 0.0]], np.float32)
    ties = TieOrder(5, np.array([42]), np.arange(8) + 100)
    idx, _ = top_k(scores, 4, ties)
    assert idx[0, :3].tolist() == [1, 6, 0]  # distinct scores keep their order
    tied = [2, 3, 4, 5, 7]
    keys = ties.keys(np.array([0]), np.array([tied]))[0]
    assert idx[0, 3] == tied[int(np.argmin(keys))]  # the 4th slot: the tied item with the smallest key


@pytest.mark.slow
@pytest.mark.parametrize("method", ["loo", "random"])
def test_constant_and_all_zero_models_score_at_chance_on_ml100k(method):
    from armor.data.movielens import embedded_ml100k_dir, load_movielens

    ml = load_movielens(embedded_ml100k_dir())
    data = build_split_data(split_interactions(ml.interactions, SplitConfig(method=method, seed=0)),
                            ml.movies["movie_id"].to_numpy())
    config = EvalConfig(ks=(10,), bootstrap=1000, seed=0)
    chance = evaluate(RandomRanker(seed=7).fit(data.train), data, "test", config)
    constant = np.full((data.n_users, data.n_items), 0.5, np.float32)
    for model in (FixedScores(constant), FixedScores(np.zeros_like(constant))):
        result = evaluate(model, data, "test", config)
        for metric in ("recall@10", "ndcg@10"):
            low, high = chance.ci[metric]
            assert low <= result.means[metric] <= high, (method, metric, result.means[metric], (low, high))
    # Why it matters: the rule it replaces ranked tied items by lowest movie index, which is what a
    # model scoring -index gets; ML-100K's low ids are popular titles, so that beats chance widely.
    by_index = np.broadcast_to(-np.arange(data.n_items, dtype=np.float32), constant.shape)
    assert evaluate(FixedScores(by_index), data, "test", config).means["recall@10"] > 2 * chance.means["recall@10"]
