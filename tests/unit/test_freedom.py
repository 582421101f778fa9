"""FREEDOM (armor.models.freedom): the item-item graph is frozen (built from the features alone, never
trained), and the user-item graph is pruned each epoch with a probability set by the edges' degrees."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from armor.models import graph_ops
from armor.models.base import load_recommender
from armor.models.content_graph import knn_item_graph
from armor.models.freedom import FREEDOM, FREEDOMConfig, edge_weights, prune_edges
from armor.training.trainer import Trainer
from tests.threads import one_thread  # noqa: F401 - autouse for this module
from tests.unit.hybrid_world import COLD, N_USERS, liked_genre, world

SMALL = FREEDOMConfig(dim=8, knn_k=4, batch_size=256, lr=1e-2, epochs=20, patience=20, reg_weight=1e-3)


def _csr_values(tensor) -> np.ndarray:
    return tensor.values().detach().numpy().copy()


def test_the_item_graph_is_built_from_the_features_alone_and_never_trained(tmp_path):
    train, features, genre = world()
    trainer = Trainer(FREEDOM(SMALL, features), train)
    model = trainer.model
    # MMRec's weighted sum (image 0.1, text 0.9), the image share split between poster and thumbnail.
    expected = (0.9 * knn_item_graph({"text": features["text"]}, None, 4)
                + 0.05 * knn_item_graph({"poster": features["poster"]}, None, 4)
                + 0.05 * knn_item_graph({"thumbnail": features["thumbnail"]}, None, 4))
    np.testing.assert_allclose(model.item_graph.toarray(), expected.toarray(), rtol=1e-6, atol=1e-7)
    graph, transpose = model._item_graph
    before = _csr_values(graph), _csr_values(transpose)
    assert not graph.requires_grad and all(p is not graph for p in model._params.parameters())
    for _ in range(3):
        trainer.run_epoch()
    np.testing.assert_array_equal(_csr_values(graph), before[0])  # training moved the embeddings, not S
    np.testing.assert_array_equal(_csr_values(transpose), before[1])
    # Another training matrix, the same item graph: it comes from content alone.
    other = Trainer(FREEDOM(SMALL, features), sp.csr_matrix(train[: N_USERS // 2])).model
    np.testing.assert_array_equal(other.item_graph.toarray(), model.item_graph.toarray())
    # A new movie has no ID embedding: the graph gives it its content neighbours' (and so their taste).
    fitted = trainer.fit()
    scores = fitted.score(np.arange(N_USERS), train)[:, COLD[1:]]
    own = genre[COLD[1:]][None, :] == liked_genre(train, genre)[:, None]
    assert scores[own].mean() > scores[~own].mean()
    loaded = load_recommender(fitted.save(tmp_path / "freedom"))
    np.testing.assert_array_equal(loaded.score(np.arange(5), train[:5]), fitted.score(np.arange(5), train[:5]))


def test_pruning_samples_edges_in_proportion_to_one_over_the_root_of_their_degrees():
    # A user who liked 4 movies and 3 users who liked one each: weights 1/sqrt(d_u d_i) differ 4-fold.
    users = np.array([0, 0, 0, 0, 1, 2, 3])
    items = np.array([0, 1, 2, 3, 4, 5, 0])
    weights = edge_weights(users, items, 4, 6)
    np.testing.assert_allclose(weights, 1 / np.sqrt([8, 4, 4, 4, 1, 1, 2]))
    rng = np.random.default_rng(0)
    draws = 20_000
    # Keeping one edge of seven (dropout 0.85): the first draw of MMRec's multinomial, P(e) = w_e / sum w.
    kept = np.concatenate([prune_edges(weights, 0.85, rng) for _ in range(draws)])
    share = np.bincount(kept, minlength=7) / draws
    expected = weights / weights.sum()
    se = np.sqrt(expected * (1 - expected) / draws)
    assert (np.abs(share - expected) < 4 * se).all(), (share, expected)
    # Uniform pruning would keep each edge 1/7 of the time: the low-degree edges are kept ~3x as often as edge 0.
    assert share[4] > 2.5 * share[0]
    # A larger share kept: exactly int(E (1 - dropout)) distinct edges, sorted.
    big = rng.random(100) + 0.01
    kept = prune_edges(big, 0.75, rng)
    assert kept.size == 25 and np.unique(kept).size == 25 and (np.diff(kept) > 0).all()
    assert prune_edges(big, 0.0, rng).size == 100


def test_each_epoch_trains_on_a_pruned_graph_renormalised_by_its_own_degrees_and_scores_on_the_full_one():
    train, features, _ = world()
    model = Trainer(FREEDOM(SMALL, features), train).model
    rng = np.random.default_rng(1)
    pruned = model._pruned_adjacency(rng).to_dense().numpy()  # (N, N)
    edges = train.nnz
    assert np.count_nonzero(pruned) == 2 * int(edges * (1 - SMALL.dropout))  # both directions of each kept edge
    np.testing.assert_array_equal(pruned, pruned.T)
    # The kept edges, normalised by the degrees they leave: LightGCN's D^-1/2 A D^-1/2 of the pruned graph.
    kept = sp.csr_matrix((pruned[:N_USERS, N_USERS:] != 0).astype(np.float32))
    assert (kept.multiply(train) != kept).nnz == 0  # only training edges
    np.testing.assert_allclose(pruned, graph_ops.normalized_adjacency_scipy(kept).toarray(), rtol=1e-6)
    # Another draw keeps other edges; scoring always uses every edge.
    other = model._pruned_adjacency(rng).to_dense().numpy()
    assert not np.array_equal(other != 0, pruned != 0)
    np.testing.assert_array_equal(model._full_adjacency.to_dense().numpy(),
                                  graph_ops.normalized_adjacency_scipy(train).toarray())
