"""The cold-start mappings (armor.models.cold_mapping): a new movie's vector is a function of its own
features (given the movies with ratings), the kNN mapping is the similarity-weighted mean of its
nearest rated movies, the linear mapping is ridge regression, and the rated movies keep their
collaborative source's vectors."""

from __future__ import annotations

import numpy as np
import pytest

from armor.config import LightGCNConfig
from armor.models.als import ALS, ALSConfig
from armor.models.base import load_recommender
from armor.models.cold_mapping import KNNMapConfig, KNNMapping, LinearMapConfig, LinearMapping
from armor.models.hybrid_ops import ContentScaler
from armor.models.lightgcn import LightGCN
from armor.training.trainer import fit
from tests.threads import one_thread  # noqa: F401 - autouse for this module
from tests.unit.hybrid_world import COLD, N_USERS, TWINS, liked_genre, world

ALS_SMALL = ALSConfig(factors=8, iterations=3)
LIGHTGCN_SMALL = LightGCNConfig(dim=8, layers=2, batch_size=256, lr=1e-2, epochs=3)
EPOCHS = 3
WARM = np.arange(COLD[0])


def mapping(kind: str, source: str, features, **settings):
    if kind == "knn-map":
        return KNNMapping(KNNMapConfig(source=source, **settings), features, als=ALS_SMALL, lightgcn=LIGHTGCN_SMALL)
    return LinearMapping(LinearMapConfig(source=source, **settings), features, als=ALS_SMALL, lightgcn=LIGHTGCN_SMALL)


def source_alone(source: str):
    return ALS(ALS_SMALL) if source == "als" else LightGCN(LIGHTGCN_SMALL, num_threads=1)


CASES = [(kind, source) for kind in ("knn-map", "linear-map") for source in ("als", "lightgcn")]


@pytest.mark.parametrize("kind, source", CASES)
def test_a_new_movies_vector_is_a_function_of_its_features_alone(kind, source, tmp_path):
    train, features, genre = world()
    model = fit(mapping(kind, source, features), train, epochs=EPOCHS)
    vectors = model.item_embeddings()  # (I, d)
    assert model.cold[COLD].all() and not model.cold[WARM].any()
    # The rated movies keep the vectors their source learns alone, bit for bit.
    alone = fit(source_alone(source), train, epochs=EPOCHS)
    rated = alone.item_factors if source == "als" else alone.item_final
    np.testing.assert_array_equal(vectors[WARM], rated[WARM])
    # Same features, same vector.
    np.testing.assert_allclose(vectors[TWINS[0]], vectors[TWINS[1]], rtol=1e-6, atol=1e-7)
    # Change one new movie's features: its vector moves, no other movie's does.
    target = COLD[3]
    changed = {m: x.copy() for m, x in features.items()}
    for x in changed.values():
        x[target] = x[COLD[4]] + 0.5 * x[COLD[5]]
    again = fit(mapping(kind, source, changed), train, epochs=EPOCHS).item_embeddings()
    others = np.setdiff1d(np.arange(vectors.shape[0]), [target])
    np.testing.assert_array_equal(again[others], vectors[others])
    assert np.abs(again[target] - vectors[target]).max() > 1e-3
    # The mapped vectors carry taste: users score new movies of their genre higher, on average.
    scores = model.score(np.arange(N_USERS), train)[:, COLD[1:]]
    own = genre[COLD[1:]][None, :] == liked_genre(train, genre)[:, None]
    assert scores[own].mean() > scores[~own].mean()
    loaded = load_recommender(model.save(tmp_path / kind))
    np.testing.assert_array_equal(loaded.score(np.arange(5), train[:5]), model.score(np.arange(5), train[:5]))


def _content(features):
    return ContentScaler.fit(features, None, rows=WARM, unit=True).transform(features)  # (I, D)


@pytest.mark.parametrize("k", [1, 5, 34])
def test_the_knn_mapping_is_the_similarity_weighted_mean_of_the_nearest_rated_movies(k):
    train, features, _ = world()
    model = fit(mapping("knn-map", "lightgcn", features, k=k), train, epochs=EPOCHS)
    x = _content(features).astype(np.float64)
    # The content similarity is the mean of the per-modality cosines of features centred on the rated movies.
    def cosine(m, a, b):
        za, zb = features[m][[a, b]] - features[m][WARM].mean(axis=0)
        return za @ zb / np.linalg.norm(za) / np.linalg.norm(zb)

    assert x[COLD[0]] @ x[3] == pytest.approx(np.mean([cosine(m, COLD[0], 3) for m in features]), rel=1e-5)
    source = model.item_embeddings()[WARM].astype(np.float64)  # the rated movies' vectors, the source's
    for movie in COLD:
        sim = x[WARM] @ x[movie]  # (W,)
        nearest = np.argsort(-sim)[:k]
        weight = np.maximum(sim[nearest], 0.0)
        weight = np.ones(k) if weight.sum() <= 0 else weight
        expected = weight @ source[nearest] / weight.sum()
        np.testing.assert_allclose(model.item_embeddings()[movie], expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("dims", [None, {"text": 40, "poster": 30}], ids=["fewer dims than movies", "more"])
def test_the_linear_mapping_is_ridge_regression_fitted_on_the_rated_movies(dims):
    train, features, _ = world(dims=dims)
    l2 = 0.3
    model = fit(mapping("linear-map", "als", features, l2=l2), train, epochs=EPOCHS)
    x = _content(features).astype(np.float64)
    y = model.item_embeddings()[WARM].astype(np.float64)
    xc, yc = x[WARM] - x[WARM].mean(axis=0), y - y.mean(axis=0)
    weights = np.linalg.solve(xc.T @ xc + l2 * np.eye(x.shape[1]), xc.T @ yc)  # (D, d)
    expected = (x[COLD] - x[WARM].mean(axis=0)) @ weights + y.mean(axis=0)
    np.testing.assert_allclose(model.item_embeddings()[COLD], expected, rtol=1e-4, atol=1e-5)
    # The penalty matters: a much larger one pulls every new movie towards the rated movies' mean vector.
    stiff = fit(mapping("linear-map", "als", features, l2=1e6), train, epochs=EPOCHS).item_embeddings()[COLD]
    np.testing.assert_allclose(stiff, np.broadcast_to(y.mean(axis=0), stiff.shape), atol=1e-3)
    assert np.abs(model.item_embeddings()[COLD] - y.mean(axis=0)).max() > 1e-2


def test_a_mapping_reports_and_flags_only_its_chosen_sources_settings():
    from armor.models.registry import MODELS
    from armor.training.search import at_edge

    spec = MODELS["linear-map"]
    space = spec.space()
    # ALS's settings at the ends of their ranges; the point trains LightGCN's vectors, so ALS is unread.
    point = {"linear_map.source": "lightgcn", "linear_map.l2": 1.0, "lightgcn.lr": 0.01,
             "als.factors": 128, "als.alpha": 100.0, "als.regularization": 1e-3}
    assert [flag for flag in at_edge(space, point) if flag.startswith("als.")]
    read = spec.read_settings(point)
    assert set(read) == {"linear_map.source", "linear_map.l2", "lightgcn.lr"}
    assert not [flag for flag in at_edge(space, read) if flag.startswith("als.")]
    assert set(spec.read_settings({**point, "linear_map.source": "als"})) == {
        "linear_map.source", "linear_map.l2", "als.factors", "als.alpha", "als.regularization"}
