"""Metrics against values computed by hand."""

import math

import numpy as np
import pytest
import scipy.sparse as sp

from armor.eval import metrics as M

INF = np.inf


def csr(rows, n_items):
    indptr, indices = [0], []
    for row in rows:
        indices.extend(sorted(row))
        indptr.append(len(indices))
    return sp.csr_matrix((np.ones(len(indices)), indices, indptr), shape=(len(rows), n_items))


def test_top_k_breaks_ties_by_item_index():
    scores = np.array([[1.0, 3.0, 3.0, 2.0, 3.0]])
    idx, valid = M.top_k(scores, 2)
    assert idx.tolist() == [[1, 2]]
    idx, _ = M.top_k(scores, 4)
    assert idx.tolist() == [[1, 2, 4, 3]]
    idx, _ = M.top_k(np.zeros((1, 6)), 3)  # popularity-style all ties
    assert idx.tolist() == [[0, 1, 2]]


def test_top_k_with_excluded_items_and_k_beyond_catalogue():
    scores = np.array([[-INF, 1.0, -INF], [0.5, 0.2, 0.9]])
    idx, valid = M.top_k(scores, 10)
    assert idx.tolist() == [[1, 0, 2], [2, 0, 1]]
    assert valid.tolist() == [[True, False, False], [True, True, True]]


def test_top_k_matches_full_stable_sort_on_random_ties():
    rng = np.random.default_rng(3)
    scores = rng.integers(0, 5, size=(50, 40)).astype(np.float32)  # many ties
    idx, _ = M.top_k(scores, 7)
    expected = np.argsort(-scores, axis=1, kind="stable")[:, :7]
    np.testing.assert_array_equal(idx, expected)



@pytest.mark.parametrize("k", [1, 5, 29, 30, 31, 50])
def test_top_k_with_tie_order_matches_a_full_sort(k):
    """Ties at, above and below the k-th value, excluded items, k near and past the catalogue size:
    the fast path (torch.topk, the (k+1)-th value deciding which rows are redone exactly) must
    equal a full sort by (score desc, tie key asc)."""
    rng = np.random.default_rng(k)
    n_rows, n_items = 200, 31
    scores = rng.integers(0, 4, size=(n_rows, n_items)).astype(np.float32)  # ties everywhere
    scores[:40] = rng.standard_normal((40, n_items))  # rows without ties
    scores[rng.random((n_rows, n_items)) < 0.2] = -INF  # excluded items
    scores[-5:] = -INF  # rows with nothing to recommend
    ties = M.TieOrder(7, np.arange(n_rows) + 1000, np.arange(n_items) * 3 + 1)
    idx, valid = M.top_k(scores, k, ties)
    keys = ties.keys(np.arange(n_rows))
    expected = np.array([np.lexsort((keys[r], -scores[r]))[: min(k, n_items)] for r in range(n_rows)])
    np.testing.assert_array_equal(idx, expected)
    np.testing.assert_array_equal(valid, np.isfinite(np.take_along_axis(scores, expected, axis=1)))

def test_ranking_metrics_hand_computed():
    # user 0: relevant {2, 4}, ranking 4, 0, 2, 1, 3 -> hits at ranks 1 and 3
    # user 1: relevant {0},    ranking 1, 2, 3, 0, 4 -> hit at rank 4
    ranking = np.array([[4, 0, 2, 1, 3], [1, 2, 3, 0, 4]])
    truth = csr([[2, 4], [0]], 5)
    hits = M.hits_matrix(ranking, np.ones_like(ranking, dtype=bool), truth)
    assert hits.tolist() == [[True, False, True, False, False], [False, False, False, True, False]]
    m = M.ranking_metrics(hits, np.array([2, 1]), ks=(1, 3, 5))

    assert m["recall@1"].tolist() == [0.5, 0.0]
    assert m["ndcg@1"].tolist() == [1.0, 0.0]
    assert m["hr@1"].tolist() == [1.0, 0.0]
    assert m["mrr@1"].tolist() == [1.0, 0.0]

    dcg = 1.0 + 1.0 / math.log2(4)
    idcg = 1.0 + 1.0 / math.log2(3)
    assert m["recall@3"].tolist() == [1.0, 0.0]
    assert m["ndcg@3"][0] == pytest.approx(dcg / idcg)
    assert m["ndcg@3"][1] == 0.0
    assert m["mrr@3"].tolist() == [1.0, 0.0]

    assert m["recall@5"].tolist() == [1.0, 1.0]
    assert m["ndcg@5"][1] == pytest.approx(1.0 / math.log2(5))
    assert m["hr@5"].tolist() == [1.0, 1.0]
    assert m["mrr@5"][1] == pytest.approx(0.25)


def test_precision_and_map_hand_computed():
    """RecBole's definitions: Precision@K = hits / K; MAP@K = sum of Precision@j at each hit j <= K,
    divided by min(|relevant|, K)."""
    ranking = np.array([[4, 0, 2, 1, 3], [1, 2, 3, 0, 4]])  # hits at ranks 1 and 3; at rank 4
    hits = M.hits_matrix(ranking, np.ones_like(ranking, dtype=bool), csr([[2, 4], [0]], 5))
    m = M.ranking_metrics(hits, np.array([2, 1]), ks=(1, 3, 5))
    assert m["precision@1"].tolist() == [1.0, 0.0]
    assert m["precision@3"] == pytest.approx([2 / 3, 0.0])
    assert m["precision@5"] == pytest.approx([2 / 5, 1 / 5])
    assert m["map@1"].tolist() == [1.0, 0.0]  # P@1 = 1 over min(2, 1) = 1
    assert m["map@3"] == pytest.approx([(1 + 2 / 3) / 2, 0.0])  # (P@1 + P@3) / min(2, 3)
    assert m["map@5"] == pytest.approx([(1 + 2 / 3) / 2, 1 / 4])  # user 1: P@4 / min(1, 5)
    # a user without relevant items is NaN, like the other accuracy metrics
    empty = M.ranking_metrics(np.zeros((1, 3), dtype=bool), np.array([0]), ks=(3,))
    assert np.isnan(empty["precision@3"][0]) and np.isnan(empty["map@3"][0])


def test_item_popularity_short_head_tail_and_information():
    # 10 positives; the head is the most popular movies reaching 80% of them: 5 + 3 = 8 -> {0, 1}
    pop = M.ItemPopularity.of(np.array([5, 3, 1, 1, 0, 0]))
    assert pop.tail.tolist() == [False, False, True, True, True, True]
    # self-information of the share of positives; a movie nobody liked counts as the least liked one (1)
    assert pop.information == pytest.approx([1.0, -math.log2(0.3), -math.log2(0.1), -math.log2(0.1),
                                             -math.log2(0.1), -math.log2(0.1)])
    # 80% of 10 is crossed, not hit: 4, 4 + 3 = 7, 7 + 2 = 9 -> the head holds three movies
    assert M.ItemPopularity.of(np.array([1, 2, 3, 4])).tail.tolist() == [True, False, False, False]
    # nothing liked: everything is tail, nothing more novel than anything else
    none = M.ItemPopularity.of(np.zeros(3))
    assert none.tail.all() and not none.information.any()


def test_popularity_metrics_hand_computed():
    pop = M.ItemPopularity.of(np.array([5, 3, 1, 1, 0, 0]))  # head {0, 1}
    indices = np.array([[0, 2, 4], [1, 0, 5]])
    valid = np.array([[True, True, True], [True, True, False]])  # user 1's third slot is excluded
    m = M.popularity_metrics(indices, valid, pop, ks=(1, 2, 3))
    assert m["arp@1"].tolist() == [5.0, 3.0]
    assert m["arp@2"].tolist() == [3.0, 4.0]  # (5 + 1) / 2, (3 + 5) / 2
    assert m["arp@3"].tolist() == [2.0, 4.0]  # (5 + 1 + 0) / 3; only two filled slots: (3 + 5) / 2
    assert m["tail@3"] == pytest.approx([2 / 3, 0.0])
    bits = {0: 1.0, 1: -math.log2(0.3), 2: -math.log2(0.1), 4: -math.log2(0.1)}
    assert m["novelty@3"] == pytest.approx([(bits[0] + bits[2] + bits[4]) / 3, (bits[1] + bits[0]) / 2])
    nothing = M.popularity_metrics(indices, np.zeros_like(valid), pop, ks=(2,))
    assert np.isnan(nothing["arp@2"]).all()


def test_gini_index_hand_computed():
    assert M.gini_index(np.array([1, 1, 1, 1])) == 0.0  # equal exposure
    assert M.gini_index(np.array([0, 0, 2, 2])) == pytest.approx(0.5)  # (1*2 + 3*2) / (4 * 4)
    assert M.gini_index(np.array([4, 0, 0, 0])) == pytest.approx(0.75)  # one movie takes every slot: (n-1)/n
    assert math.isnan(M.gini_index(np.zeros(3)))


def test_bootstrap_means_match_a_gather_per_resample():
    """The sparse-product bootstrap draws the same resamples as indexing would, NaN users skipped."""
    rng = np.random.default_rng(0)
    per_user = {"a": rng.random(40), "b": rng.random(40)}
    per_user["b"][:5] = np.nan
    means = M._bootstrap_means(per_user, 30, seed=4)
    sample = np.random.default_rng(4).integers(0, 40, size=(30, 40))
    np.testing.assert_allclose(means["a"], per_user["a"][sample].mean(axis=1))
    np.testing.assert_allclose(means["b"], np.nanmean(per_user["b"][sample], axis=1))


def test_metrics_when_k_exceeds_the_catalogue():
    # 3 items, K = 10: the list holds all 3; recall is complete and NDCG uses the ideal of 2 hits.
    scores = np.array([[0.1, 0.9, 0.5]])
    idx, valid = M.top_k(scores, 10)
    hits = M.hits_matrix(idx, valid, csr([[0, 2]], 3))  # ranking 1, 2, 0 -> hits at 2 and 3
    m = M.ranking_metrics(hits, np.array([2]), ks=(10,))
    assert m["recall@10"][0] == 1.0
    expected = (1 / math.log2(3) + 1 / math.log2(4)) / (1 + 1 / math.log2(3))
    assert m["ndcg@10"][0] == pytest.approx(expected)
    assert m["mrr@10"][0] == pytest.approx(0.5)


def test_excluded_items_are_never_hits():
    scores = np.array([[-INF, -INF, 0.3]])
    idx, valid = M.top_k(scores, 3)
    # item 0 is relevant but excluded (-inf): it sits in the padded tail and must not count
    hits = M.hits_matrix(idx, valid, csr([[0]], 3))
    assert not hits.any()


def test_users_without_relevant_items_are_nan():
    m = M.ranking_metrics(np.zeros((1, 3), dtype=bool), np.array([0]), ks=(3,))
    assert np.isnan(m["recall@3"][0]) and np.isnan(m["ndcg@3"][0])


def test_intra_list_diversity_hand_computed():
    # genres: item0 {A}, item1 {A, B}, item2 {C}, item3 {}
    genres = csr([[0], [0, 1], [2], []], 3)
    idx = np.array([[0, 1, 2], [0, 1, 3]])
    valid = np.ones_like(idx, dtype=bool)
    d = M.intra_list_diversity(idx, valid, genres, k=3)
    # list 0 pairs: (0,1) 1-1/2, (0,2) 1, (1,2) 1 -> mean (0.5 + 1 + 1) / 3
    assert d[0] == pytest.approx(2.5 / 3)
    # list 1 pairs: (0,1) 0.5, (0,3) 1, (1,3) 1
    assert d[1] == pytest.approx(2.5 / 3)
    # k=2: a single pair
    assert M.intra_list_diversity(idx, valid, genres, k=2)[0] == pytest.approx(0.5)
    # an excluded slot does not count as a pair
    d = M.intra_list_diversity(idx, np.array([[True, True, False]] * 2), genres, k=3)
    assert d[0] == pytest.approx(0.5)


def test_bootstrap_ci_contains_mean_and_narrows_with_more_users():
    rng = np.random.default_rng(0)
    small = rng.random(50)
    large = rng.random(5000)
    ci_small = M.bootstrap_ci({"x": small}, 500, 0.95, seed=1)["x"]
    ci_large = M.bootstrap_ci({"x": large}, 500, 0.95, seed=1)["x"]
    assert ci_small[0] < small.mean() < ci_small[1]
    assert ci_large[0] < large.mean() < ci_large[1]
    assert (ci_large[1] - ci_large[0]) < (ci_small[1] - ci_small[0]) / 5
    # the half-width of a mean of U(0,1) over n users is about 1.96 * 0.2887 / sqrt(n)
    assert (ci_large[1] - ci_large[0]) / 2 == pytest.approx(1.96 * 0.2887 / math.sqrt(5000), rel=0.2)


def test_paired_bootstrap_detects_a_consistent_difference():
    rng = np.random.default_rng(0)
    a = rng.random(300)
    b = a - 0.05 + rng.normal(0, 0.01, 300)  # b is always a bit worse
    mean, (lo, hi), p_not_better = M.paired_bootstrap_difference(a, b, 500, 0.95, seed=0)
    assert mean == pytest.approx(0.05, abs=0.005)
    assert 0 < lo < mean < hi
    assert p_not_better == 0.0
    # the same vectors compared to themselves give a CI around zero
    _, (lo, hi), _ = M.paired_bootstrap_difference(a, a + rng.normal(0, 0.01, 300), 500, 0.95, seed=0)
    assert lo < 0 < hi
