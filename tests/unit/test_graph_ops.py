"""armor.models.graph_ops: the CSR propagation equals lightgcn's COO one, values and gradients."""

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from armor.config import LightGCNConfig
from armor.models import graph_ops
from armor.models.lightgcn import INIT_STD, LightGCN, NegativeSampler, normalized_adjacency, propagate
from tests.threads import one_thread  # noqa: F401 - autouse for this module

LAYERS = [0, 1, 2, 3]


def random_train(n_users=30, n_items=25, density=0.15, seed=0, isolated_users=(3, 17), isolated_items=(0, 11, 24)):
    """A users x items CSR with some users and items that have no interaction at all."""
    rng = np.random.default_rng(seed)
    dense = (rng.random((n_users, n_items)) < density).astype(np.float32)
    dense[list(isolated_users), :] = 0
    dense[:, list(isolated_items)] = 0
    dense[5, 1] = 3.0  # a weighted interaction is still one edge of weight 1
    return sp.csr_matrix(dense)


@pytest.fixture
def train():
    return random_train()


def test_adjacency_is_the_reference_one_bitwise_and_symmetric(train):
    reference = normalized_adjacency(train).to_dense()
    fast = graph_ops.normalized_adjacency_csr(train)
    assert fast.layout == torch.sparse_csr and fast.dtype == torch.float32
    dense = fast.to_dense()
    assert torch.equal(dense, reference)
    assert torch.equal(dense, dense.T)
    n_users = train.shape[0]
    for node in (3, 17, n_users + 0, n_users + 11, n_users + 24):  # isolated: zero rows and columns
        assert not dense[node].any() and not dense[:, node].any()


def test_adjacency_of_a_graph_without_edges():
    empty = sp.csr_matrix((4, 3), dtype=np.float32)
    fast = graph_ops.normalized_adjacency_csr(empty)
    assert fast.shape == (7, 7) and not fast.to_dense().any()
    x = torch.randn(7, 2)
    assert torch.allclose(graph_ops.propagate_inference(fast, x, 3), x / 4)


@pytest.mark.parametrize("layers", LAYERS)
def test_forward_and_gradient_match_the_reference_float32(train, layers):
    coo = normalized_adjacency(train)
    csr = graph_ops.normalized_adjacency_csr(train)
    generator = torch.Generator().manual_seed(layers)
    x0 = torch.randn(coo.shape[0], 8, generator=generator)
    upstream = torch.randn(coo.shape[0], 8, generator=generator)

    x_ref = x0.clone().requires_grad_(True)
    out_ref = propagate(coo, x_ref, layers)
    (out_ref * upstream).sum().backward()
    x_fast = x0.clone().requires_grad_(True)
    out_fast = graph_ops.propagate(csr, x_fast, layers)
    (out_fast * upstream).sum().backward()

    assert out_fast.shape == out_ref.shape
    torch.testing.assert_close(out_fast, out_ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(x_fast.grad, x_ref.grad, atol=1e-5, rtol=0)
    torch.testing.assert_close(graph_ops.propagate_inference(csr, x0, layers), out_ref.detach(), atol=1e-5, rtol=0)


@pytest.mark.parametrize("layers", LAYERS)
def test_gradcheck_float64(layers):
    train = random_train(n_users=7, n_items=6, density=0.35, seed=1, isolated_users=(2,), isolated_items=(4,))
    csr = graph_ops.normalized_adjacency_csr(train).to(torch.float64)
    x = torch.randn(13, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda e: graph_ops.propagate(csr, e, layers), (x,))


def test_negative_layers_are_refused(train):
    csr = graph_ops.normalized_adjacency_csr(train)
    with pytest.raises(ValueError, match="layers"):
        graph_ops.propagate(csr, torch.zeros(csr.shape[0], 2), -1)


def reference_epoch(train, config, adjacency, step):
    """One epoch of LightGCN's training loop (shuffle, negatives, steps) from the seeded init."""
    n_users, n_items = train.shape
    rng = np.random.default_rng(config.seed)
    embeddings = torch.empty(n_users + n_items, config.dim)
    torch.nn.init.normal_(embeddings, std=INIT_STD, generator=torch.Generator().manual_seed(config.seed))
    embeddings = torch.nn.Parameter(embeddings)
    optimizer = torch.optim.Adam([embeddings], lr=config.lr)
    coo = train.tocoo()
    pos_users, pos_items = coo.row.astype(np.int64), coo.col.astype(np.int64)
    sampler = NegativeSampler(train)
    order = rng.permutation(pos_users.size)
    for start in range(0, order.size, config.batch_size):
        batch = order[start:start + config.batch_size]
        users = pos_users[batch]
        step(adjacency, embeddings, optimizer, users, pos_items[batch], sampler(rng, users))
    return embeddings.detach()


N_USERS, LAYERS_TRAINED, REG = 30, 3, 1e-2


def plain_step(adjacency, embeddings, optimizer, users, positives, negatives):
    """The step under plain autograd with the reference propagation, as LightGCN trained before."""
    u, p, n = (torch.from_numpy(x) for x in (users, positives + N_USERS, negatives + N_USERS))
    final = propagate(adjacency, embeddings, LAYERS_TRAINED)  # (N, d)
    ranking = torch.nn.functional.softplus((final[u] * final[n]).sum(-1) - (final[u] * final[p]).sum(-1)).mean()
    l2 = (embeddings[u].pow(2).sum() + embeddings[p].pow(2).sum() + embeddings[n].pow(2).sum()) / (2 * users.size)
    loss = ranking + REG * l2
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def fast_step(adjacency, embeddings, optimizer, users, positives, negatives):
    graph_ops.bpr_step(adjacency, embeddings, optimizer, users, positives, negatives, N_USERS, LAYERS_TRAINED, REG)


def test_bpr_step_trains_like_the_plain_autograd_reference(train):
    """One epoch of bpr_step ends at the weights the plain-autograd reference step reaches, and
    LightGCN (which trains with bpr_step) ends there too."""
    config = LightGCNConfig(dim=8, layers=LAYERS_TRAINED, lr=5e-3, reg=REG, batch_size=16, epochs=1, seed=3)
    assert train.shape[0] == N_USERS
    reference = reference_epoch(train, config, normalized_adjacency(train), plain_step)
    fast = reference_epoch(train, config, graph_ops.normalized_adjacency_csr(train), fast_step)
    torch.testing.assert_close(fast, reference, atol=1e-5, rtol=0)
    model = LightGCN(config, num_threads=1).fit(train)
    np.testing.assert_allclose(model.user_emb0, reference[:N_USERS].numpy(), atol=1e-5)
    np.testing.assert_allclose(model.item_emb0, reference[N_USERS:].numpy(), atol=1e-5)
