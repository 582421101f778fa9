"""FAISS retrieval agrees with brute-force numpy ranking (armor.eval.metrics.top_k), ties included."""

import numpy as np
import pyarrow as pa
import pytest
import scipy.sparse as sp

from armor.errors import ArmorError
from armor.eval.metrics import top_k
from armor.io import write_parquet
from armor.models.base import EmbeddingRecommender, l2_normalize
from armor.retrieval import ItemIndex, RetrievalError, UnknownMovieError


def brute_force(queries, embeddings, ids, k, exclude=None):
    """The evaluator's ranking: cosine scores, excluded items at -inf, metrics.top_k."""
    scores = l2_normalize(np.asarray(queries, np.float32)) @ l2_normalize(embeddings).T  # (B, I)
    if exclude is not None:
        position = {int(m): i for i, m in enumerate(ids)}
        for b, movies in enumerate(exclude):
            scores[b, [position[m] for m in movies if m in position]] = -np.inf
    idx, valid = top_k(scores, k)
    return (np.where(valid, ids[idx], -1), np.where(valid, np.take_along_axis(scores, idx, axis=1), -np.inf))


def shuffled_ids(rng, n):
    # Catalogue order deliberately differs from id order: ties break by catalogue index.
    return rng.permutation(np.arange(1, 3 * n + 1, 3))[:n].astype(np.int32)


def tie_heavy_vectors(rng, n, d=8):
    """Unit vectors with four entries of +-0.5: every inner product is a multiple of 0.25,
    computed exactly in any summation order, so ties are real and many."""
    out = np.zeros((n, d), np.float32)
    for row in out:
        row[rng.choice(d, 4, replace=False)] = rng.choice([-0.5, 0.5], 4)
    return out


@pytest.mark.parametrize("n_queries", [5, 64])  # FAISS uses a different kernel from 20 queries on
def test_flat_search_equals_brute_force_top_k(n_queries):
    rng = np.random.default_rng(0)
    n, d = 1500, 24
    ids = shuffled_ids(rng, n)
    emb = rng.standard_normal((n, d)).astype(np.float32) * rng.uniform(0.1, 3.0, (n, 1)).astype(np.float32)
    queries = rng.standard_normal((n_queries, d)).astype(np.float32)
    exclude = [set(rng.choice(ids, rng.integers(0, 40), replace=False).tolist()) for _ in range(n_queries)]
    # The best unexcluded movies must be excluded too sometimes: take query 0's exact top 5.
    exclude[0] |= set(brute_force(queries[:1], emb, ids, 5)[0][0].tolist())
    index = ItemIndex(ids, emb, "flat")
    for k, excl in [(1, None), (10, None), (10, exclude), (100, exclude)]:
        got_ids, got_scores = index.search(queries, k, exclude=excl)
        want_ids, want_scores = brute_force(queries, emb, ids, k, excl)
        assert got_ids.shape == (n_queries, k)
        np.testing.assert_array_equal(got_ids, want_ids)
        np.testing.assert_allclose(got_scores, want_scores, rtol=0, atol=1e-5)
        if excl is not None:
            for row, movies in zip(got_ids, excl):
                assert not set(row.tolist()) & movies


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_ties_break_by_catalogue_index_like_top_k(kind):
    rng = np.random.default_rng(1)
    n = 300
    ids = shuffled_ids(rng, n)
    emb = tie_heavy_vectors(rng, n)
    emb[50:60] = emb[7]  # ten exact duplicates as well
    queries = np.concatenate([tie_heavy_vectors(rng, 30), emb[7:8], np.zeros((1, 8), np.float32)])
    exclude = [set(rng.choice(ids, 25, replace=False).tolist()) for _ in range(len(queries))]
    # HNSW explores the whole of such a small graph when asked for many results; the point here
    # is that the tie-break on top of FAISS is the same whatever the index.
    index = ItemIndex(ids, emb, kind, ef_search=n)
    for k, excl in [(5, None), (20, exclude), (290, exclude)]:
        got_ids, got_scores = index.search(queries, k, exclude=excl)
        want_ids, want_scores = brute_force(queries, emb, ids, k, excl)
        # Many rows tie exactly at the k-th score: a wrong tie-break would show here.
        assert (want_scores[:, -1:] == want_scores[:, :-1]).any()
        np.testing.assert_array_equal(got_ids, want_ids)
        np.testing.assert_array_equal(got_scores, want_scores)
    # A zero query ties every movie at 0: the answer is the catalogue order.
    zero_ids, _ = index.search(np.zeros((1, 8), np.float32), 12)
    np.testing.assert_array_equal(zero_ids[0], ids[:12])


def test_more_asked_than_left_pads_with_minus_one():
    rng = np.random.default_rng(2)
    ids = np.array([10, 20, 30, 40], np.int32)
    index = ItemIndex(ids, rng.standard_normal((4, 6)).astype(np.float32))
    got_ids, got_scores = index.search(rng.standard_normal((2, 6)), 10, exclude=[{10, 30}, set()])
    assert got_ids.shape == (2, 4)  # k is clipped to the catalogue, like top_k
    assert sorted(got_ids[0, :2].tolist()) == [20, 40] and got_ids[0, 2:].tolist() == [-1, -1]
    assert np.isneginf(got_scores[0, 2:]).all() and np.isfinite(got_scores[1]).all()
    assert sorted(got_ids[1].tolist()) == [10, 20, 30, 40]


class FixedEmbeddings(EmbeddingRecommender):
    name = "test-fixed-embeddings"

    def __init__(self, items):
        self.items = items

    def fit(self, train, valid=None):
        return self

    def item_embeddings(self):
        return self.items


def test_recommend_matches_the_embedding_recommender_and_excludes_history():
    rng = np.random.default_rng(3)
    n, d = 400, 16
    ids = shuffled_ids(rng, n)
    emb = rng.standard_normal((n, d)).astype(np.float32)
    histories = [rng.choice(n, size, replace=False) for size in (1, 3, 12, 40)]
    profile = sp.csr_matrix((np.ones(sum(map(len, histories)), np.float32),
                             (np.repeat(np.arange(4), [len(h) for h in histories]), np.concatenate(histories))),
                            shape=(4, n))
    scores = FixedEmbeddings(emb).score(np.arange(4), profile)
    scores[profile.nonzero()] = -np.inf  # the evaluator's exclusion of training positives
    want = ids[top_k(scores, 20)[0]]

    index = ItemIndex(ids, emb)
    got, got_scores = index.recommend_many([ids[h].tolist() for h in histories], k=20)
    np.testing.assert_array_equal(got, want)
    one, one_scores = index.recommend(ids[histories[2]].tolist(), k=20)
    np.testing.assert_array_equal(one, want[2])
    np.testing.assert_array_equal(one_scores, got_scores[2])
    # A repeated movie counts once, as in the binary profile matrix.
    np.testing.assert_array_equal(index.recommend(list(ids[histories[1]]) * 2, k=20)[0], want[1])
    # Without exclusion a one-movie history finds that movie first (cosine 1 with itself).
    assert index.recommend([int(ids[histories[0][0]])], k=3, exclude_history=False)[0][0] == ids[histories[0][0]]
    np.testing.assert_allclose(index.user_vector(ids[histories[2]]), emb[histories[2]].mean(axis=0), atol=1e-6)


def test_similar_excludes_the_query_movie():
    rng = np.random.default_rng(4)
    ids = shuffled_ids(rng, 200)
    emb = rng.standard_normal((200, 8)).astype(np.float32)
    index = ItemIndex(ids, emb)
    got, _ = index.similar([int(ids[3]), int(ids[150])], k=5)
    want, _ = brute_force(emb[[3, 150]], emb, ids, 5, [{int(ids[3])}, {int(ids[150])}])
    np.testing.assert_array_equal(got, want)


def recall_at(approx, exact):
    return np.mean([len(set(a) & set(e)) / len(e) for a, e in zip(approx, exact)])


@pytest.mark.parametrize("data", ["clustered", "uniform"])
@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_approximate_recall_at_10_against_exact(kind, data):
    rng = np.random.default_rng(5)
    n, d = 3000, 32
    ids = np.arange(n, dtype=np.int32)
    if data == "clustered":  # what trained embeddings look like: the default settings suffice
        centers = rng.standard_normal((40, d))
        emb = centers[rng.integers(0, 40, n)] + 0.5 * rng.standard_normal((n, d))
        queries = centers[rng.integers(0, 40, 300)] + 0.5 * rng.standard_normal((300, d))
        options = {}
    else:  # no structure at all: IVF must probe a large share of its cells
        emb, queries = rng.standard_normal((n, d)), rng.standard_normal((300, d))
        options = {"nlist": 16, "nprobe": 10} if kind == "ivf" else {}
    exact, _ = ItemIndex(ids, emb.astype(np.float32)).search(queries, 10)
    approx_index = ItemIndex(ids, emb.astype(np.float32), kind, **options)
    approx, approx_scores = approx_index.search(queries, 10)
    assert recall_at(approx, exact) >= 0.9
    assert (approx >= 0).all() and (np.diff(approx_scores, axis=1) <= 0).all()
    if kind == "ivf" and data == "uniform":  # and it is an approximation, not a flat index in disguise
        assert recall_at(ItemIndex(ids, emb.astype(np.float32), "ivf", nlist=16, nprobe=1).search(queries, 10)[0],
                         exact) < 0.9


@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw"])
def test_save_load_round_trip(tmp_path, kind):
    rng = np.random.default_rng(6)
    ids = shuffled_ids(rng, 800)
    emb = rng.standard_normal((800, 16)).astype(np.float32)
    index = ItemIndex(ids, emb, kind, nlist=20, nprobe=3, M=16, ef_search=40)
    queries = rng.standard_normal((25, 16)).astype(np.float32)
    before = index.search(queries, 15, exclude=[{int(ids[0])}] * 25)
    index.save(tmp_path / "index")
    loaded = ItemIndex.load(tmp_path / "index")
    assert loaded.params() == index.params() and loaded.kind == kind
    np.testing.assert_array_equal(loaded.movie_ids, index.movie_ids)
    np.testing.assert_array_equal(loaded.embeddings(), emb)
    after = loaded.search(queries, 15, exclude=[{int(ids[0])}] * 25)
    np.testing.assert_array_equal(after[0], before[0])
    np.testing.assert_array_equal(after[1], before[1])
    with pytest.raises(RetrievalError, match="not a saved ItemIndex"):
        ItemIndex.load(tmp_path / "missing")


def test_from_item_embeddings_parquet(tmp_path):
    """The file pipelines/train.py writes: movie_id int32, embedding fixed_size_list<float32>."""
    rng = np.random.default_rng(7)
    ids = shuffled_ids(rng, 50)
    emb = rng.standard_normal((50, 12)).astype(np.float32)
    table = pa.table({"movie_id": pa.array(ids, pa.int32()),
                      "embedding": pa.FixedSizeListArray.from_arrays(pa.array(emb.reshape(-1)), 12)})
    path = write_parquet(table, tmp_path / "item_embeddings.parquet")
    index = ItemIndex.from_parquet(path)
    np.testing.assert_array_equal(index.movie_ids, ids)
    np.testing.assert_array_equal(index.embeddings(), emb)
    with pytest.raises(RetrievalError, match="movie_id and embedding"):
        write_parquet(pa.table({"movie_id": pa.array([1])}), tmp_path / "bad.parquet")
        ItemIndex.from_parquet(tmp_path / "bad.parquet")


def test_use_gpu_without_a_gpu_build_searches_on_cpu():
    rng = np.random.default_rng(8)
    emb = rng.standard_normal((100, 8)).astype(np.float32)
    cpu = ItemIndex(np.arange(100), emb)
    maybe_gpu = ItemIndex(np.arange(100), emb, use_gpu=True)
    queries = rng.standard_normal((4, 8))
    np.testing.assert_array_equal(maybe_gpu.search(queries, 10)[0], cpu.search(queries, 10)[0])


def test_errors_name_the_movie_or_the_setting():
    rng = np.random.default_rng(9)
    ids = np.array([5, 6, 7, 8], np.int32)
    index = ItemIndex(ids, rng.standard_normal((4, 3)).astype(np.float32))
    with pytest.raises(UnknownMovieError, match=r"2 movie id\(s\) not in the index's catalogue: 99, 1234") as err:
        index.recommend([5, 99, 1234], k=2)
    assert err.value.movie_ids == [99, 1234] and isinstance(err.value, ArmorError)
    with pytest.raises(UnknownMovieError, match="movie_id: .*: 42"):
        index.similar([42])
    with pytest.raises(RetrievalError, match="history is empty"):
        index.user_vector([])
    with pytest.raises(RetrievalError, match=r"\(B, 3\)"):
        index.search(np.zeros((2, 4)), 2)
    with pytest.raises(RetrievalError, match="k=0"):
        index.search(np.zeros((2, 3)), 0)
    with pytest.raises(RetrievalError, match="more than once.*\\[5\\]"):
        ItemIndex(np.array([5, 5, 6]), np.ones((3, 3)))
    with pytest.raises(RetrievalError, match="index kind 'annoy'"):
        ItemIndex(ids, np.ones((4, 3)), "annoy")
    with pytest.raises(RetrievalError, match="not finite"):
        ItemIndex(ids, np.full((4, 3), np.nan))
    # Unknown ids in an exclusion list cannot be returned anyway: ignored, not an error.
    assert index.search(np.ones((1, 3)), 2, exclude=[{999}])[0].shape == (1, 2)
