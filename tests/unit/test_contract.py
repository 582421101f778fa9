"""The Recommender contract, checked once for every model `armor train --model` can build.

Every model in the registry (``armor.models.registry.MODELS``, what `armor train --model` accepts)
is built by ``build_model`` (the path the CLI, Ray workers and Tune trials take) on one small
planted-truth workspace and fitted once through ``armor.training.trainer.fit``. The known answer: the world's tastes are
planted in the ratings and, through ``planted_features``, in the features, so every model but
the random ranker must rank validation items far above chance, and the random ranker must score
what chance predicts (computed here from the split, not echoed from a run).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import scipy.sparse as sp

from armor.config import (
    ArmorGraphConfig,
    BPRConfig,
    EvalConfig,
    FusionConfig,
    LightGCNConfig,
    TrainConfig,
)
from armor.data.benchmark import load_benchmark
from armor.errors import ArmorError
from armor.eval.protocol import evaluate
from armor.models.base import EmbeddingRecommender, TrainableRecommender, load_recommender
from armor.models.baselines import RandomRanker
from armor.models.content import FeatureModel
from armor.models.freedom import FREEDOMConfig
from armor.models.registry import MODELS, ModelSettings, build_model, model_class, names
from armor.models.vbpr import VBPRConfig
from armor.training.trainer import fit as fit_model
from tests.threads import one_thread  # noqa: F401 - autouse for this module
from tests.workspaces import make_workspace

EVAL = EvalConfig(bootstrap=0)
# The registry's families: content models rank by item features, interaction models learn from
# ratings alone, reference models (popularity, random) are the floor.
EMBEDDING = names("content")
TRAINED_CONTENT = tuple(n for n in EMBEDDING if MODELS[n].configs)
RAW_CONTENT = tuple(n for n in EMBEDDING if not MODELS[n].configs)
INTERACTION = names("interaction")
# Hybrid models learn from both; they expose item vectors (served through FAISS for a history) but a
# known user also has a learned vector, so they are not EmbeddingRecommenders.
HYBRID = names("hybrid")
# Models that learn who likes what, from ratings or from features; popularity only knows counts,
# new-first only which movies nobody liked in training (the item cold start's flag-only reference).
PERSONALISED = (*EMBEDDING, *INTERACTION, *HYBRID)
UNPERSONALISED = ("popularity", "new-first")
# Measured on this fixture (random ranker NDCG@10 0.028, its expectation 0.026): personalised
# models 0.18-0.28 (6.3x-10x), popularity 0.071 (2.5x; the world's popularity exponent is 0.3).
PERSONALISED_MARGIN = 4.0
POPULARITY_MARGIN = 2.0
# Users scored in the score checks; a pair picked out of order for the batching check.
USERS = np.arange(48)
PAIR = np.array([29, 3])


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    root = make_workspace(tmp_path_factory.mktemp("contract") / "ws")
    return load_benchmark(root, "random")


@pytest.fixture(scope="module")
def settings():
    return ModelSettings.of(fusion=FusionConfig(dim=32, out_dim=16, heads=2),
                            train=TrainConfig(batch_size=64, epochs=6, steps_per_epoch=8, patience=3),
                            bpr=BPRConfig(factors=16, iterations=60),
                            lightgcn=LightGCNConfig(dim=16, layers=2, epochs=30, batch_size=1024, patience=3),
                            armor_graph=ArmorGraphConfig(dim=16, fusion_dim=16, heads=2, knn_k=4, reduce_dim=16,
                                                         batch_size=1024, lr=1e-2, epochs=30, patience=3),
                            vbpr=VBPRConfig(dim=16, content_dim=16, batch_size=1024, lr=1e-2, epochs=30, patience=3),
                            freedom=FREEDOMConfig(dim=16, knn_k=4, batch_size=1024, lr=1e-2, epochs=30, patience=3))


def build(name, settings, bench):
    return build_model(name, settings, bench.features, bench.present)


@pytest.fixture(scope="module")
def fitted(settings, bench):
    """Fit as ``pipelines.train.train --local`` does (validation early stopping; test never read)."""
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = fit_model(build(name, settings, bench), bench.data.train, data=bench.data)
        return cache[name]

    return get


@pytest.fixture(scope="module")
def valid_means(fitted, bench):
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = evaluate(fitted(name), bench.data, "valid", EVAL).means
        return cache[name]

    return get


def history_of(bench, users):
    return bench.data.train[users]


def chance(bench):
    """Per evaluated user: candidates C (catalogue minus training positives) and relevant r."""
    data = bench.data
    relevant = np.diff(data.valid.indptr)
    users = relevant > 0
    candidates = data.n_items - np.diff(data.train.indptr)
    return candidates[users].astype(np.float64), relevant[users].astype(np.float64)


def test_every_registered_model_has_a_known_family_and_builds_under_its_name(settings, bench):
    # A new model ships with its family, so the contract below knows what to expect of it.
    assert set(MODELS) == {*EMBEDDING, *INTERACTION, *HYBRID, *names("reference")}
    for name in MODELS:
        assert build(name, settings, bench).name == name


# --------------------------------------------------------------------------------------------
# score(): shape, dtype, freshness, determinism, batching
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", MODELS)
def test_scores_are_fresh_finite_float32_and_deterministic(name, fitted, bench):
    model = fitted(name)
    history = history_of(bench, USERS)
    first = model.score(USERS, history)
    assert first.shape == (USERS.size, bench.data.n_items)
    assert first.dtype == np.float32
    assert np.isfinite(first).all()
    kept = first.copy()
    # The evaluator masks training items in place; a cached or shared array would leak it.
    first[:] = -np.inf
    second = model.score(USERS, history)
    assert np.isfinite(second).all()
    np.testing.assert_array_equal(second, kept)
    assert not np.shares_memory(first, second)


@pytest.mark.parametrize("name", MODELS)
def test_scores_do_not_depend_on_batching(name, fitted, bench):
    model = fitted(name)
    big = model.score(USERS, history_of(bench, USERS))
    pair = model.score(PAIR, history_of(bench, PAIR))
    single = model.score(PAIR[:1], history_of(bench, PAIR[:1]))
    # BLAS may block a 2-row and a 48-row product differently: equal up to float32 rounding,
    # which is far below any gap between distinct scores that could reorder a ranking.
    np.testing.assert_allclose(pair, big[PAIR], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(single, big[PAIR[:1]], rtol=1e-6, atol=1e-6)
    # The pair's two rows are different users, not one row repeated.
    assert not np.array_equal(pair[0], pair[1]) or name in UNPERSONALISED


@pytest.mark.parametrize("name", MODELS)
def test_save_and_load_reproduce_scores_and_embeddings(name, fitted, bench, tmp_path):
    model = fitted(name)
    model.save(tmp_path / name)
    loaded = load_recommender(tmp_path / name)
    assert type(loaded) is type(model)
    history = history_of(bench, USERS)
    np.testing.assert_array_equal(loaded.score(USERS, history), model.score(USERS, history))
    items = model.item_embeddings()
    if items is None:
        assert loaded.item_embeddings() is None
    else:
        np.testing.assert_array_equal(loaded.item_embeddings(), items)


# --------------------------------------------------------------------------------------------
# Embedding models: users are the mean of their liked items, scores are cosines
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", MODELS)
def test_only_embedding_and_hybrid_models_expose_embeddings(name, fitted, bench):
    model = fitted(name)
    if name in (*EMBEDDING, *HYBRID):
        assert isinstance(model, EmbeddingRecommender) == (name in EMBEDDING)
        items = model.item_embeddings()
        assert items.ndim == 2 and items.shape[0] == bench.data.n_items and items.shape[1] >= 1
        assert items.dtype == np.float32 and np.isfinite(items).all()
    else:
        # write_model keys item_embeddings.parquet on this being None.
        assert model.item_embeddings() is None
        assert model.user_embeddings(history_of(bench, USERS)) is None


@pytest.mark.parametrize("name", HYBRID)
def test_a_hybrid_model_scores_a_user_it_never_saw_by_the_cosine_of_their_liked_items(name, fitted, bench):
    # What the FAISS pyfunc serves for a history: a stranger is their profile alone.
    model = fitted(name)
    items = model.item_embeddings().astype(np.float64)
    history = history_of(bench, USERS)
    strangers = USERS + bench.data.n_users  # user rows the model never trained
    mean = np.stack([items[history[row].indices].mean(axis=0) for row in range(USERS.size)])
    expected = (mean / np.linalg.norm(mean, axis=1, keepdims=True)) @ (items / np.linalg.norm(items, axis=1,
                                                                                                keepdims=True)).T
    np.testing.assert_allclose(model.score(strangers, history), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", EMBEDDING)
def test_embedding_scores_are_cosine_of_mean_liked_item(name, fitted, bench):
    model = fitted(name)
    items = model.item_embeddings().astype(np.float64)
    history = history_of(bench, USERS)
    users = model.user_embeddings(history)
    assert users.shape == (USERS.size, items.shape[1])
    expected_users = np.stack([items[history[row].indices].mean(axis=0) for row in range(USERS.size)])
    np.testing.assert_allclose(users, expected_users, rtol=1e-5, atol=1e-6)
    unit_users = expected_users / np.linalg.norm(expected_users, axis=1, keepdims=True)
    unit_items = items / np.linalg.norm(items, axis=1, keepdims=True)
    np.testing.assert_allclose(model.score(USERS, history), unit_users @ unit_items.T, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", MODELS)
def test_an_empty_history_gives_finite_scores(name, fitted, bench):
    model = fitted(name)
    users = np.array([0, 1, 2])
    rows = history_of(bench, users)
    empty = sp.csr_matrix((1, bench.data.n_items), dtype=rows.dtype)
    history = sp.vstack([rows[0], empty, rows[2]], format="csr")  # the middle user liked nothing yet
    assert history[1].nnz == 0 and history[0].nnz > 0
    scores = model.score(users, history)
    assert np.isfinite(scores).all()
    if name in EMBEDDING:
        # A zero user vector: every item ties at 0 (EmbeddingRecommender's documented choice).
        np.testing.assert_array_equal(scores[1], np.zeros(bench.data.n_items, np.float32))
        assert np.isfinite(model.user_embeddings(history)).all()


# --------------------------------------------------------------------------------------------
# Known answer on validation
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [m for m in MODELS if m not in ("random", "new-first")])
def test_every_model_beats_random_on_validation(name, valid_means, bench):
    candidates, relevant = chance(bench)
    discounts = 1.0 / np.log2(np.arange(2, 12))
    ideal = np.r_[0.0, np.cumsum(discounts)][np.minimum(relevant, 10).astype(np.int64)]
    # Each relevant item sits at any candidate position with probability 1/C.
    expected_random = float(np.mean(relevant / candidates * discounts.sum() / ideal))
    bar = max(valid_means("random")["ndcg@10"], expected_random)
    margin = POPULARITY_MARGIN if name == "popularity" else PERSONALISED_MARGIN
    ndcg = valid_means(name)["ndcg@10"]
    assert ndcg >= margin * bar, f"{name}: valid NDCG@10 {ndcg:.4f} < {margin}x random {bar:.4f}"


def test_new_first_ranks_every_movie_without_a_training_positive_first_and_knows_nothing_else(settings, bench):
    train = bench.data.train.tolil()
    train[:, ::9] = 0  # every ninth movie loses its positives: new to the log
    train = train.tocsr()
    new = np.asarray(train.sum(axis=0)).ravel() == 0
    assert 0 < new.sum() < new.size
    scores = fit_model(build("new-first", settings, bench), train).score(USERS, history_of(bench, USERS))
    assert (scores[:, new].min(axis=1) > scores[:, ~new].max(axis=1)).all()
    assert np.ptp(scores[:, new]) == 0 and np.ptp(scores[:, ~new]) == 0  # within a group, ties: random order


def test_personalised_models_beat_popularity(valid_means):
    pop = valid_means("popularity")["ndcg@10"]
    weakest = min(PERSONALISED, key=lambda m: valid_means(m)["ndcg@10"])
    # Seen: weakest (bpr / fused-paper) 0.175 against popularity 0.071.
    assert valid_means(weakest)["ndcg@10"] > 1.8 * pop, (weakest, valid_means(weakest), pop)


def test_random_recall_matches_its_analytic_expectation(valid_means, bench):
    candidates, relevant = chance(bench)
    expected = float(np.mean(np.minimum(10, candidates) / candidates))
    # Hits in the top 10 are hypergeometric (10 draws, r successes among C): the spread of the
    # mean recall over users, for one seed.
    p = relevant / candidates
    variance = 10 * p * (1 - p) * (candidates - 10) / (candidates - 1) / relevant**2
    se = float(np.sqrt(variance.sum()) / candidates.size)
    one = valid_means("random")["recall@10"]
    assert abs(one - expected) < 4 * se, (one, expected, se)
    # Averaged over 200 seeds (~2 s) the band (+-0.003) is narrow enough to catch a wrong
    # candidate set: training items left in the ranking move the mean to 10 / n_items (0.042
    # against 0.046 here).
    seeds = 200
    only_10 = dataclasses.replace(EVAL, ks=(10,))
    mean = np.mean([evaluate(RandomRanker(seed=s).fit(bench.data.train), bench.data, "valid", only_10)
                    .means["recall@10"] for s in range(seeds)])
    assert abs(mean - expected) < 4 * se / np.sqrt(seeds), (mean, expected, se / np.sqrt(seeds))


# --------------------------------------------------------------------------------------------
# Errors that name the problem
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", TRAINED_CONTENT)
def test_content_model_loaded_from_disk_refuses_to_fit(name, fitted, bench, tmp_path):
    fitted(name).save(tmp_path / name)
    loaded = load_recommender(tmp_path / name)
    with pytest.raises(ArmorError, match="without features"):
        fit_model(loaded, bench.data.train, data=bench.data)


@pytest.mark.parametrize("name", RAW_CONTENT)
def test_raw_feature_model_needs_features_or_saved_embeddings(name, fitted, bench, tmp_path):
    with pytest.raises(ArmorError, match="no features"):
        FeatureModel(name).fit(bench.data.train)
    # Nothing to learn: a loaded one keeps its saved embeddings and may be refitted.
    fitted(name).save(tmp_path / name)
    loaded = load_recommender(tmp_path / name).fit(bench.data.train)
    np.testing.assert_array_equal(loaded.item_embeddings(), fitted(name).item_embeddings())


@pytest.mark.parametrize("name", [*EMBEDDING, *INTERACTION, *HYBRID])
def test_fit_on_a_train_matrix_of_another_catalogue_names_the_mismatch(name, settings, bench):
    # Popularity and random have no catalogue of their own to compare with: they are left out.
    n_items = bench.data.n_items
    narrow = sp.csr_matrix(bench.data.train[:, : n_items - 7])
    model = build(name, settings, bench)
    with pytest.raises(ArmorError) as caught:
        if isinstance(model, TrainableRecommender) and name in (*INTERACTION, *HYBRID):
            fit_model(model, narrow, data=bench.data)
        elif name in INTERACTION:  # item-item models learn their catalogue from the matrix: caught when scoring
            fit_model(model, narrow).score(USERS, history_of(bench, USERS))
        else:
            fit_model(model, narrow)
    message = str(caught.value)
    assert str(n_items - 7) in message and str(n_items) in message, message


# --------------------------------------------------------------------------------------------
# Every trainable model resumes through the one trainer to where an uninterrupted run ends
# --------------------------------------------------------------------------------------------


def untimed(history):
    return [{k: v for k, v in record.items() if k not in ("seconds", "pairs_per_s")} for record in history]


TRAINABLE = tuple(n for n in MODELS if issubclass(model_class(n), TrainableRecommender))


def test_the_trainable_models_are_the_ones_with_epochs():
    assert {"fused", "fused-paper", "text-projected", "image-projected", "bpr", "lightgcn", "als"} <= set(TRAINABLE)
    assert not {"text", "image", "popularity", "random", "itemknn", "ease"} & set(TRAINABLE)


@pytest.mark.parametrize("name", TRAINABLE)
def test_a_run_resumed_from_its_trainer_state_ends_like_an_uninterrupted_one(name, settings, bench):
    import io

    import torch

    from armor.training.trainer import Trainer

    whole = Trainer(build(name, settings, bench), bench.data.train, bench.data).fit()
    first = Trainer(build(name, settings, bench), bench.data.train, bench.data)
    first.run_epoch()
    first.run_epoch()
    buffer = io.BytesIO()  # through torch.save, as a Ray Train checkpoint
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    resumed = Trainer(build(name, settings, bench), bench.data.train, bench.data)
    resumed.load_state_dict(torch.load(buffer, weights_only=False))
    assert resumed.epoch == 2
    model = resumed.fit()
    assert untimed(model.history) == untimed(whole.history)
    assert model.best_epoch == whole.best_epoch
    np.testing.assert_allclose(model.score(USERS, history_of(bench, USERS)),
                               whole.score(USERS, history_of(bench, USERS)), rtol=1e-5, atol=1e-6)
