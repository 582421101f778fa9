"""ItemKNN and EASE: what their settings mean, EASE's closed form, its memory and its guard."""

import tracemalloc

import numpy as np
import pytest
import scipy.sparse as sp

from armor.errors import ConfigError
from armor.models import neighbors
from armor.models.neighbors import EASE, ItemKNN, available_memory, ease_fits, ease_max_items

GIB = 2**30


def binary(users: int, items: int, density: float, seed: int = 0) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    return sp.csr_matrix((rng.random((users, items)) < density).astype(np.float32))


def closed_form(x: sp.csr_matrix, l2: float) -> np.ndarray:
    """EASE as Steck (2019) writes it, with a general inverse: the reference."""
    gram = (x.T @ x).toarray().astype(np.float64)
    gram[np.diag_indices_from(gram)] += l2
    p = np.linalg.inv(gram)
    b = -p / np.diag(p)[None, :]
    b[np.diag_indices_from(b)] = 0.0
    return b


def test_ease_in_place_cholesky_inverse_gives_the_closed_form():
    x = binary(500, 300, 0.08)
    model = EASE({"l2": 20.0}).fit(x)
    assert model.similarity.dtype == np.float32 and model.similarity.shape == (300, 300)
    np.testing.assert_allclose(model.similarity, closed_form(x, 20.0), atol=1e-6, rtol=0)
    assert not np.diag(model.similarity).any()


def test_ease_peak_memory_is_one_float64_matrix_and_its_float32_copy():
    n = 1200
    x = binary(1000, n, 0.02)
    tracemalloc.start()
    try:
        EASE({"l2": 10.0}).fit(x)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # 8 + 4 bytes per item pair, plus the (small) training matrix: np.linalg.inv's way took 32.
    assert peak / n**2 < 13.0, f"{peak / n**2:.1f} bytes per item pair"


def test_ease_refuses_a_catalogue_that_does_not_fit_and_says_what_fits(monkeypatch):
    monkeypatch.setattr(neighbors, "available_memory", lambda: 10 * 2**20)  # 10 MiB
    with pytest.raises(ConfigError, match=r"ease: 2,000 items need 0\.0 GiB .* 0\.0 GiB is available, which fits "
                                          r"EASE on at most 886 items"):
        EASE().fit(sp.csr_matrix((5, 2000), dtype=np.float32))


def test_ease_guard_at_the_movielens_shapes():
    fits, needed, _ = ease_fits(87_585, available=24 * GIB)  # ML-32M on this kind of machine
    assert not fits and needed / GIB == pytest.approx(85.7, abs=0.1)
    assert ease_fits(10_681, available=24 * GIB)[0]  # ML-10M
    assert ease_max_items(24 * GIB) == 43_962
    assert 0 < available_memory() <= 2**50


def test_ease_and_itemknn_refuse_to_score_before_fit():
    for model in (EASE(), ItemKNN()):
        with pytest.raises(Exception, match="before fit"):
            model.score(np.arange(1), sp.csr_matrix((1, 3), dtype=np.float32))


@pytest.mark.parametrize("k", [1, 5, 20])
def test_itemknn_keeps_k_neighbours_besides_the_item_itself(k):
    x = binary(400, 60, 0.3)  # every movie shares users with every other one
    similarity = ItemKNN({"k": k}).fit(x).similarity
    assert (similarity.getnnz(axis=1) == k).all()  # implicit's K=k alone gave the item and k - 1 others
    assert not similarity.diagonal().any()
    # The k kept are the k most cosine-similar other movies.
    dense = (x.T @ x).toarray()
    norms = np.sqrt(np.diag(dense))
    cosine = dense / norms[:, None] / norms[None, :]
    np.fill_diagonal(cosine, -np.inf)
    for item in range(0, 60, 7):
        kth = np.sort(cosine[item])[-k]
        assert set(similarity[item].indices) <= set(np.flatnonzero(cosine[item] >= kth - 1e-6))
