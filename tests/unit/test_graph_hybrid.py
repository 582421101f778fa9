"""ARMoR-Graph (armor.models.graph_hybrid): cold movies are scored from content, item vectors depend
on the frozen content graph, and the user vector folds in the profile it is given."""

from __future__ import annotations

import numpy as np
import pytest

from armor.config import ArmorGraphConfig
from armor.models.base import load_recommender
from armor.models.content_graph import knn_item_graph
from armor.models.graph_hybrid import GraphHybrid
from armor.training.trainer import Trainer
from tests.threads import one_thread  # noqa: F401 - autouse for this module
from tests.unit.hybrid_world import COLD, N_GENRES, N_USERS, TWINS, world

SMALL = dict(dim=16, fusion_dim=16, heads=2, layers=2, knn_k=4, batch_size=256, lr=1e-2)


@pytest.mark.parametrize("new_item_vector", ["content", "neighbours"])
def test_a_movie_nobody_rated_gets_its_vector_from_content(new_item_vector, tmp_path):
    train, features, genre = world()
    model = GraphHybrid(ArmorGraphConfig(**SMALL, epochs=8, patience=8, new_item_vector=new_item_vector), features)
    model.fit(train)
    # New means no positive in the training matrix: the model is told nothing else.
    assert model.cold[COLD].all() and not model.cold[:COLD[0]].any()
    vectors = model.item_embeddings()  # (I, d)
    cold = vectors[COLD]
    assert np.isfinite(cold).all() and (np.linalg.norm(cold, axis=1) > 1e-3).all()
    content = model.item_content[COLD] / np.linalg.norm(model.item_content[COLD], axis=1, keepdims=True)
    if new_item_vector == "content":  # its content vector, from its features alone
        np.testing.assert_allclose(cold, content, atol=1e-6)
    else:  # its content-graph neighbours' ID embeddings, not the content vector
        assert np.abs(cold - content).max() > 1e-2
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
    train, _, _ = world()
    model = GraphHybrid(ArmorGraphConfig(**{**SMALL, **overrides}), features)
    Trainer(model, train)  # begin(): the graphs and the seeded initial weights
    return model.item_embeddings().copy()


@pytest.mark.parametrize("target, overrides", [(3, {}), (36, {"content": False, "align_weight": 0.0})],
                         ids=["rated movie", "cold movie without the content side: scored by its neighbours"])
def test_item_vectors_depend_on_the_content_graph(target, overrides):
    _, features, _ = world()
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
    train, features, _ = world()
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


# ---- data-parallel: two real ranks (gloo on CPU) --------------------------------------------

def _train_two_epochs(world_size: int, rank: int, batch_size: int) -> dict[str, np.ndarray]:
    from armor.training.trainer import Streams

    train, features, _ = world()
    model = GraphHybrid(ArmorGraphConfig(**{**SMALL, "batch_size": batch_size}, fusion_dropout=0.1), features)
    streams = Streams(0)
    model.begin(train, streams, rank=rank, world_size=world_size)
    losses = [model.train_epoch(epoch, streams)["loss"] for epoch in (1, 2)]
    model.end()
    return {"items": model.item_embeddings(), "users": model.user_final, "losses": np.array(losses)}


def _rank_main(rank: int, init_file: str, out_dir: str) -> None:
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        np.savez(f"{out_dir}/rank{rank}.npz", **_train_two_epochs(world_size=2, rank=rank, batch_size=96))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_gloo_ranks_train_as_one_process_with_their_global_batch(tmp_path):
    """Each rank takes its slice of every global batch and the ranks sum their gradients: two
    workers at batch 96 train the model one process trains at batch 192, replicas stay identical."""
    import torch.multiprocessing as mp

    mp.spawn(_rank_main, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    ranks = [dict(np.load(tmp_path / f"rank{r}.npz")) for r in range(2)]
    single = _train_two_epochs(world_size=1, rank=0, batch_size=192)
    assert world()[0].nnz % 192 != 0  # the epoch ends on a partial global batch
    for result in ranks:
        np.testing.assert_allclose(result["items"], single["items"], atol=2e-5)
        np.testing.assert_allclose(result["users"], single["users"], atol=2e-5)
        np.testing.assert_allclose(result["losses"], single["losses"], rtol=1e-5)
    np.testing.assert_array_equal(ranks[0]["items"], ranks[1]["items"])


def test_several_workers_need_a_process_group():
    from armor.errors import ConfigError
    from armor.training.trainer import Streams

    train, features, _ = world()
    with pytest.raises(ConfigError, match="torch.distributed"):
        GraphHybrid(ArmorGraphConfig(**SMALL), features).begin(train, Streams(0), rank=0, world_size=2)
