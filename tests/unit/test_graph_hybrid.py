"""ARMoR-Graph (armor.models.graph_hybrid): cold movies are scored from content, item vectors depend
on the frozen content graph, and the user vector folds in the profile it is given."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from armor.config import ArmorGraphConfig
from armor.models.base import load_recommender
from armor.models.content_graph import knn_item_graph
from armor.models.graph_hybrid import GraphHybrid
from armor.training.trainer import Trainer
from tests.threads import one_thread  # noqa: F401 - autouse for this module

N_USERS, N_ITEMS, N_GENRES = 60, 40, 4
COLD = np.arange(34, 40)  # movies nobody rated in training
TWINS = (34, 35)  # two cold movies with identical features
SMALL = dict(dim=16, fusion_dim=16, heads=2, layers=2, knn_k=4, batch_size=256, lr=1e-2)


def _world(seed: int = 0):
    """Users like the movies of their genre; features are noisy projections of the genre."""
    rng = np.random.default_rng(seed)
    genre = np.arange(N_ITEMS) % N_GENRES  # (I,)
    taste = rng.integers(0, N_GENRES, N_USERS)  # (U,)
    likes = (taste[:, None] == genre[None, :]) & (rng.random((N_USERS, N_ITEMS)) < 0.6)  # (U, I)
    likes[:, COLD] = False
    onehot = np.eye(N_GENRES, dtype=np.float32)[genre]  # (I, G)
    features = {m: (onehot @ rng.standard_normal((N_GENRES, d)) + 0.3 * rng.standard_normal((N_ITEMS, d)))
                .astype(np.float32) for m, d in (("text", 12), ("poster", 10), ("thumbnail", 10))}
    for x in features.values():
        x[TWINS[1]] = x[TWINS[0]]
    return sp.csr_matrix(likes.astype(np.float32)), features, genre


@pytest.mark.parametrize("new_items", [COLD, None], ids=["new movies: content path", "unrated known movies"])
def test_a_movie_nobody_rated_gets_its_vector_from_content(new_items, tmp_path):
    train, features, genre = _world()
    model = GraphHybrid(ArmorGraphConfig(**SMALL, epochs=8, patience=8), features, new_items=new_items)
    model.fit(train)
    assert model.cold[COLD].all() and not model.cold[:COLD[0]].any()
    vectors = model.item_embeddings()  # (I, d)
    cold = vectors[COLD]
    assert np.isfinite(cold).all() and (np.linalg.norm(cold, axis=1) > 1e-3).all()
    if new_items is not None:  # a new movie's vector is its content vector, from its features alone
        content = model.item_content[COLD]
        np.testing.assert_allclose(cold, content / np.linalg.norm(content, axis=1, keepdims=True), atol=1e-6)
    # Same features, same vector: no per-movie ID embedding breaks the tie ...
    np.testing.assert_allclose(vectors[TWINS[0]], vectors[TWINS[1]], rtol=1e-5, atol=1e-6)
    # ... and different features, different vectors and scores (not one tied "unknown movie").
    distinct = COLD[1:]
    scores = model.score(np.arange(N_USERS), train)[:, distinct]  # (U, 5)
    assert np.unique(np.round(scores, 5), axis=1).shape[1] == distinct.size
    assert all(np.ptp(row) > 1e-4 for row in scores)
    # The content vector carries taste: users score cold movies of their genre higher, on average.
    liked_genre = np.asarray((train @ np.eye(N_GENRES)[genre]).argmax(axis=1)).ravel()  # (U,)
    own = genre[distinct][None, :] == liked_genre[:, None]  # (U, 5)
    assert scores[own].mean() > scores[~own].mean()
    # Save and load give back the same scores.
    loaded = load_recommender(model.save(tmp_path / "m"))
    np.testing.assert_array_equal(loaded.score(np.arange(5), train[:5]), model.score(np.arange(5), train[:5]))


def _item_vectors(features, **overrides) -> np.ndarray:
    train, _, _ = _world()
    model = GraphHybrid(ArmorGraphConfig(**{**SMALL, **overrides}), features)
    Trainer(model, train)  # begin(): the graphs and the seeded initial weights
    return model.item_embeddings().copy()


@pytest.mark.parametrize("target, overrides", [(3, {}), (36, {})],
                         ids=["rated movie", "cold movie scored by its neighbours"])
def test_item_vectors_depend_on_the_content_graph(target, overrides):
    _, features, _ = _world()
    graph = knn_item_graph(features, None, SMALL["knn_k"]).toarray()
    warm = [j for j in range(COLD[0]) if j != target]
    neighbour = next(j for j in np.argsort(-graph[target]) if j in warm and graph[target, j] > 0)
    stranger = next(j for j in warm if graph[target, j] == 0 and j != neighbour)
    # Swap the features of a content neighbour and a stranger: the standardisation and PCA
    # statistics and the target's own features stay exactly the same; only the graph changes.
    swapped = {m: x.copy() for m, x in features.items()}
    for x in swapped.values():
        x[[neighbour, stranger]] = x[[stranger, neighbour]]
    for content_graph in (True, False):
        before = _item_vectors(features, content_graph=content_graph, **overrides)[target]
        after = _item_vectors(swapped, content_graph=content_graph, **overrides)[target]
        if content_graph:
            assert np.abs(before - after).max() > 1e-3
        else:  # the control: without the content graph the swap cannot reach the target
            np.testing.assert_allclose(before, after, rtol=1e-5, atol=1e-6)


def test_the_user_vector_folds_in_the_profile_it_is_given():
    train, features, _ = _world()
    model = GraphHybrid(ArmorGraphConfig(**SMALL, epochs=4, patience=4, profile_weight=0.5), features).fit(train)
    items = model.item_embeddings()  # (I, d) unit
    history = train[:3]
    # A user the model never saw is their profile alone: the cosine of their liked items' mean vector,
    # which is what the FAISS pyfunc serves for a history.
    stranger = model.score(np.array([N_USERS + 5]), history[:1])[0]
    mean = history[:1].toarray() @ items
    np.testing.assert_allclose(stranger, ((mean / np.linalg.norm(mean)) @ items.T)[0], rtol=1e-5, atol=1e-6)
    # A known user's scores move with the profile (more of it, on test), and not without the term.
    more = history.copy().tolil()
    more[0, np.flatnonzero(train[5].toarray()[0])] = 1.0
    more = more.tocsr()
    assert not np.allclose(model.score(np.arange(3), history)[0], model.score(np.arange(3), more)[0])
    off = GraphHybrid(ArmorGraphConfig(**SMALL, epochs=4, patience=4, profile_weight=0.0), features).fit(train)
    np.testing.assert_allclose(off.score(np.arange(3), history)[0], off.score(np.arange(3), more)[0], rtol=1e-6)
