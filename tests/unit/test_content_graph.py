"""The frozen content kNN graph: FAISS finds the brute-force neighbours, and a movie is never a
neighbour through a modality it lacks, however small the catalogue."""

import numpy as np
import pytest

from armor.models.content_graph import knn_item_graph


def brute_force_neighbours(x: np.ndarray, k: int) -> list[set[int]]:
    z = x - x.mean(axis=0)  # the scalar scale of feature_stats does not change a cosine
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    sim = z @ z.T
    return [set(np.argsort(-row, kind="stable")[:k]) for row in sim]


@pytest.mark.parametrize("k", [1, 7])
def test_graph_rows_are_the_brute_force_neighbours(k):
    x = np.random.default_rng(0).standard_normal((300, 24)).astype(np.float32)
    graph = knn_item_graph({"text": x}, None, k)
    expected = brute_force_neighbours(x.astype(np.float64), k)
    assert [set(graph[i].indices) for i in range(300)] == expected
    np.testing.assert_allclose(graph.sum(axis=1).A1, 1.0, rtol=1e-6)
    np.testing.assert_allclose(graph.data, 1.0 / k, rtol=1e-6)


def test_k_is_capped_at_the_movies_that_have_the_modality():
    rng = np.random.default_rng(1)
    text, poster = rng.standard_normal((6, 8)).astype(np.float32), rng.standard_normal((6, 5)).astype(np.float32)
    has_text = np.array([True, False, True, False, True, False])
    graph = knn_item_graph({"text": text, "poster": poster}, {"text": has_text}, k=10).toarray()
    poster_only = knn_item_graph({"poster": poster}, None, k=10).toarray()
    with_text, without = np.flatnonzero(has_text), np.flatnonzero(~has_text)
    text_part = 2 * graph[with_text] - poster_only[with_text]  # the text modality's half of those rows
    # Three movies have an overview: each is linked by text to those three, 1/3 each, and to nobody else.
    np.testing.assert_allclose(text_part[:, with_text], 1.0 / 3.0, rtol=1e-6)
    np.testing.assert_allclose(text_part[:, without], 0.0, atol=1e-7)
    # A movie without an overview has its poster neighbours only; every row sums to 1.
    np.testing.assert_allclose(graph[without], poster_only[without], rtol=1e-6)
    np.testing.assert_allclose(graph.sum(axis=1), 1.0, rtol=1e-6)


def test_a_modality_no_movie_has_adds_no_edges():
    rng = np.random.default_rng(2)
    features = {"text": rng.standard_normal((5, 4)).astype(np.float32),
                "poster": rng.standard_normal((5, 4)).astype(np.float32)}
    graph = knn_item_graph(features, {"text": np.zeros(5, bool)}, k=2).toarray()
    np.testing.assert_allclose(graph, knn_item_graph({"poster": features["poster"]}, None, k=2).toarray(), rtol=1e-6)
