"""Pair sampling, in-batch negative mining, the losses, one epoch, and mining across two ranks."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from armor.config import TrainConfig
from armor.errors import ConfigError, DataError
from armor.training.loop import TrainingError, train_epoch
from armor.training.losses import info_nce, make_pair_step, pair_loss, triplet_margin_loss
from armor.training.trainer import Streams
from armor.training.triplets import LikedItems, PairSampler, gather, gather_with_grad, mine_negatives


def random_train(n_users: int = 40, n_items: int = 30, density: float = 0.2, seed: int = 0) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    dense = (rng.random((n_users, n_items)) < density).astype(np.float32)
    dense[0] = 0.0  # no positives
    dense[1] = 0.0
    dense[1, 3] = 1.0  # one positive: cannot form a pair
    return sp.csr_matrix(dense)


# ---- sampling ------------------------------------------------------------------------------


def epoch_rng(seed, epoch):
    """The generator the trainer hands an epoch (``Streams.epoch_rng``)."""
    return Streams(seed).epoch_rng(epoch)


def test_sampler_is_deterministic_per_seed_and_epoch():
    train = random_train()
    a = list(PairSampler(train, 16).batches(epoch_rng(3, 0), 4))
    b = list(PairSampler(train, 16).batches(epoch_rng(3, 0), 4))
    c = list(PairSampler(train, 16).batches(epoch_rng(3, 1), 4))
    d = list(PairSampler(train, 16).batches(epoch_rng(4, 0), 4))
    for x, y in zip(a, b):
        assert all(torch.equal(x[k], y[k]) for k in ("anchor", "positive", "user"))
    assert not torch.equal(torch.cat([x["anchor"] for x in a]), torch.cat([x["anchor"] for x in c]))
    assert not torch.equal(torch.cat([x["anchor"] for x in a]), torch.cat([x["anchor"] for x in d]))
    assert set(a[0]) == {"anchor", "positive", "user", "items", "inverse"}
    assert all(v.dtype == torch.int64 for v in a[0].values())
    for batch in a:  # each distinct item once, sorted, and the batch rebuilt from them
        assert torch.equal(batch["items"], torch.unique(torch.cat([batch["anchor"], batch["positive"]])))
        assert torch.equal(batch["items"][batch["inverse"]], torch.cat([batch["anchor"], batch["positive"]]))


def test_ranks_take_disjoint_slices_of_one_global_stream():
    train = random_train()
    single = list(PairSampler(train, 32).batches(epoch_rng(1, 5), 3))
    rank0 = list(PairSampler(train, 16, rank=0, world_size=2).batches(epoch_rng(1, 5), 3))
    rank1 = list(PairSampler(train, 16, rank=1, world_size=2).batches(epoch_rng(1, 5), 3))
    for s, r0, r1 in zip(single, rank0, rank1):
        for key in ("anchor", "positive", "user"):
            assert torch.equal(torch.cat([r0[key], r1[key]]), s[key])
        assert not torch.equal(r0["anchor"], r1["anchor"])


def test_every_pair_is_two_distinct_items_co_liked_in_training():
    train = random_train()
    dense = train.toarray()
    sampler = PairSampler(train, 64)
    seed = 0
    users = []
    for batch in sampler.batches(epoch_rng(seed, 0), 20):
        u, a, p = batch["user"].numpy(), batch["anchor"].numpy(), batch["positive"].numpy()
        assert (dense[u, a] == 1).all() and (dense[u, p] == 1).all()
        assert (a != p).all()
        users.append(u)
    users = np.concatenate(users)
    counts = np.diff(train.indptr)
    assert not np.isin(users, np.flatnonzero(counts < 2)).any()  # users 0 and 1 never drawn
    # Users are drawn in proportion to their positives: compare frequencies with the counts.
    eligible = np.flatnonzero(counts >= 2)
    expected = counts[eligible] / counts[eligible].sum()
    observed = np.bincount(users, minlength=train.shape[0])[eligible] / users.size
    assert np.abs(observed - expected).max() < 0.02
    assert sampler.steps_per_epoch() == math.ceil(counts[eligible].sum() / (2 * 64))


def test_sampler_refuses_a_matrix_without_pairs():
    with pytest.raises(DataError, match="two or more training positives"):
        PairSampler(sp.csr_matrix(np.eye(3, dtype=np.float32)), 4)


# ---- which candidates may be negatives -----------------------------------------------------


def test_liked_items_dense_and_sorted_keys_agree():
    train = random_train(n_users=25, n_items=40, seed=2)
    dense, keyed = LikedItems(train), LikedItems(train, dense_limit=0)
    assert dense.table is not None and keyed.keys is not None
    users = torch.arange(25)[:, None]
    items = torch.arange(40)[None, :]
    expected = torch.from_numpy(train.toarray() != 0)
    assert torch.equal(dense.contains(users, items), expected)
    assert torch.equal(keyed.contains(users, items), expected)


def test_liked_items_grid_from_csr_rows_agrees_with_the_dense_table():
    """Grids (N, 1) x (1, C) with repeated users and items, empty rows, and grids too small for the
    CSR path (its rows exceed 4 N C positives, so the binary searches answer)."""
    train = random_train(n_users=40, n_items=60, density=0.2, seed=5)
    train = sp.vstack([train, sp.csr_matrix((2, 60), dtype=np.float32)]).tocsr()  # two users with no positives
    dense, keyed = LikedItems(train), LikedItems(train, dense_limit=0)
    rng = np.random.default_rng(0)
    for n, c in [(1, 1), (7, 3), (42, 60), (30, 90), (5, 1)]:
        users = torch.from_numpy(rng.integers(0, 42, n))[:, None]
        items = torch.from_numpy(rng.integers(0, 60, c))[None, :]
        assert torch.equal(keyed.contains(users, items), dense.contains(users, items))
    rows = train[np.arange(42)]
    big = keyed._grid(torch.arange(42), torch.arange(60))
    assert big is not None and torch.equal(big, torch.from_numpy(rows.toarray() != 0))
    assert keyed._grid(torch.arange(42), torch.tensor([3])) is None  # too many positives for 42 x 1 cells


def test_negative_mask_excludes_liked_items_and_the_anchor():
    train = sp.csr_matrix(np.array([[1, 1, 0, 0, 0], [0, 0, 1, 1, 0]], dtype=np.float32))
    liked = LikedItems(train)
    users = torch.tensor([0, 1])
    anchors = torch.tensor([0, 2])
    candidates = torch.tensor([0, 1, 2, 3, 4, 4])
    mask = liked.negative_mask(users, anchors, candidates)
    assert mask.tolist() == [[False, False, True, True, True, True],
                             [True, True, False, False, True, True]]


def test_pair_loss_never_mines_an_item_the_user_liked_or_the_anchor():
    train = random_train(n_users=60, n_items=50, density=0.3, seed=4)
    liked = LikedItems(train)
    dense = train.toarray()
    sampler = PairSampler(train, 24)
    seed = 0
    g = torch.Generator().manual_seed(0)
    table = torch.randn(50, 8, generator=g)
    for mining in ("random", "semi-hard", "batch-hard"):
        config = TrainConfig(mining=mining)
        for batch in sampler.batches(epoch_rng(seed, 0), 5):
            out = pair_loss(table[batch["anchor"]], table[batch["positive"]], batch["user"], batch["anchor"],
                            batch["positive"], liked, config, torch.Generator().manual_seed(1))
            users = torch.cat([batch["user"], batch["user"]])
            rows = torch.nonzero(out.found).flatten()
            negatives = out.candidate_items[out.negatives[rows]].numpy()
            assert (dense[users[rows].numpy(), negatives] == 0).all()
            assert (negatives != out.anchor_items[rows].numpy()).all()


# ---- mining on a hand-made similarity matrix -----------------------------------------------

SIM = torch.tensor([
    # candidates:  0     1     2     3     4
    [0.90, 0.70, 0.55, 0.30, 0.65],  # anchor 0, positive sim 0.60
    [0.20, 0.10, 0.05, 0.40, 0.35],  # anchor 1, positive sim 0.90: nothing in (0.7, 0.9)
    [0.50, 0.50, 0.50, 0.50, 0.50],  # anchor 2: no valid candidate at all
])
POS = torch.tensor([0.60, 0.90, 0.10])
VALID = torch.tensor([
    [False, True, True, True, True],  # candidate 0 is liked by the user
    [True, True, True, False, True],  # candidate 3 is the anchor itself
    [False, False, False, False, False],
])


def test_batch_hard_takes_the_most_similar_valid_candidate():
    index, found = mine_negatives(SIM, POS, VALID, "batch-hard", margin=0.2)
    assert found.tolist() == [True, True, False]
    assert index[:2].tolist() == [1, 4]  # 0.90 is liked, so 0.70; 0.40 is the anchor, so 0.35


def test_semi_hard_takes_the_hardest_inside_the_margin_band():
    index, found = mine_negatives(SIM, POS, VALID, "semi-hard", margin=0.2, fallback="none")
    # anchor 0: band (0.40, 0.60) holds candidate 2 (0.55); 0.65 and 0.70 are harder than the positive.
    # anchor 1: band (0.70, 0.90) is empty: FaceNet's rule has no negative for it, so it is left out.
    assert index[0].item() == 2
    assert found.tolist() == [True, False, False]
    wide, _ = mine_negatives(SIM, POS, VALID, "semi-hard", margin=0.5)
    assert wide[0].item() == 2  # 0.55 is still the hardest below 0.60


def test_the_semi_hard_fallback_is_a_flag():
    easiest, found = mine_negatives(SIM, POS, VALID, "semi-hard", 0.2, fallback="easiest")
    assert easiest[:2].tolist() == [2, 2] and found.tolist() == [True, True, False]  # anchor 1: 0.05 is the least
    hardest, _ = mine_negatives(SIM, POS, VALID, "semi-hard", 0.2, fallback="hardest")
    assert hardest[:2].tolist() == [2, 4]  # anchor 1: 0.35, the most similar valid one
    with pytest.raises(ConfigError, match="semi_hard_fallback"):
        mine_negatives(SIM, POS, VALID, "semi-hard", 0.2, fallback="nearest")


def test_random_mining_is_uniform_over_valid_candidates_only():
    g = torch.Generator().manual_seed(0)
    picks = torch.stack([mine_negatives(SIM, POS, VALID, "random", 0.2, g)[0] for _ in range(4000)])  # (T, 3)
    counts0 = torch.bincount(picks[:, 0], minlength=5).float() / 4000
    assert counts0[0] == 0 and torch.allclose(counts0[1:], torch.full((4,), 0.25), atol=0.03)
    counts1 = torch.bincount(picks[:, 1], minlength=5)
    assert counts1[3] == 0 and (counts1[[0, 1, 2, 4]] > 0).all()


# ---- losses against hand-computed values ---------------------------------------------------


def test_triplet_margin_loss_by_hand():
    loss = triplet_margin_loss(torch.tensor([0.5, 0.2, 0.9]), torch.tensor([0.4, 0.6, 0.1]), margin=0.2)
    # max(0, 0.4-0.5+0.2)=0.1, max(0, 0.6-0.2+0.2)=0.6, max(0, 0.1-0.9+0.2)=0
    assert loss.item() == pytest.approx((0.1 + 0.6 + 0.0) / 3)
    empty = triplet_margin_loss(torch.zeros(0, requires_grad=True), torch.zeros(0), 0.2)
    assert empty.item() == 0.0
    empty.backward()


def test_info_nce_by_hand_masks_co_liked_items():
    sim = torch.tensor([[0.9, 0.1, 0.5, 0.3], [0.2, 0.8, 0.4, 0.6]])
    positive = torch.tensor([2, 1])
    valid = torch.tensor([[False, True, False, True],  # candidate 0 is also liked: masked
                          [True, False, True, True]])
    t = 0.5
    row0 = -math.log(math.exp(0.5 / t) / (math.exp(0.5 / t) + math.exp(0.1 / t) + math.exp(0.3 / t)))
    row1 = -math.log(math.exp(0.8 / t) / sum(math.exp(s / t) for s in (0.2, 0.8, 0.4, 0.6)))
    assert info_nce(sim, positive, valid, t).item() == pytest.approx((row0 + row1) / 2, rel=1e-5)


def test_pair_loss_by_hand_on_two_pairs():
    # Items 0..3 on the unit circle; user 0 liked {0, 1}, user 1 liked {2, 3}.
    angle = torch.tensor([0.0, 0.3, 1.0, 2.0])
    table = torch.stack([angle.cos(), angle.sin()], dim=1)
    train = sp.csr_matrix(np.array([[1, 1, 0, 0], [0, 0, 1, 1]], dtype=np.float32))
    anchors, positives, users = torch.tensor([0, 2]), torch.tensor([1, 3]), torch.tensor([0, 1])
    out = pair_loss(table[anchors], table[positives], users, anchors, positives, LikedItems(train),
                    TrainConfig(mining="batch-hard", margin=0.2), symmetric=False)

    def cos(i: int, j: int) -> float:
        return math.cos(float(angle[i] - angle[j]))

    # anchor 0 (user 0): negatives 2 and 3, hardest is 2; anchor 2 (user 1): negatives 0, 1 -> 1.
    expected = (max(0, cos(0, 2) - cos(0, 1) + 0.2) + max(0, cos(2, 1) - cos(2, 3) + 0.2)) / 2
    assert out.loss.item() == pytest.approx(expected, rel=1e-5)
    assert out.candidate_items[out.negatives].tolist() == [2, 1]


def test_batch_hard_pairs_the_hardest_negative_with_the_hardest_positive():
    # User 0 liked items 0, 1 and 2; the batch holds pairs (0, 1) of user 0 and (3, 4) of user 1.
    # For anchor 0 the positives in the batch are 1 (its pair) and... not 2 (not in the batch);
    # a second pair (0, 2) of user 0 puts item 2 in the batch too: the hardest positive of anchor 0
    # is then the less similar of items 1 and 2.
    angle = torch.tensor([0.0, 0.2, 1.2, 2.0, 2.1])
    table = torch.stack([angle.cos(), angle.sin()], dim=1)
    train = sp.csr_matrix(np.array([[1, 1, 1, 0, 0], [0, 0, 0, 1, 1]], dtype=np.float32))
    anchors, positives, users = torch.tensor([0, 3, 0]), torch.tensor([1, 4, 2]), torch.tensor([0, 1, 0])
    out = pair_loss(table[anchors], table[positives], users, anchors, positives, LikedItems(train),
                    TrainConfig(mining="batch-hard", margin=0.5), symmetric=False)

    def cos(i: int, j: int) -> float:
        return math.cos(float(angle[i] - angle[j]))

    # anchor 0 (row 0 and row 2): hardest positive 2 (cos 0.36 < cos(0, 1)); negatives 3, 4 -> 3.
    # anchor 3 (user 1): positive 4 only; negatives 0, 1, 2 -> 2 (the closest to angle 2.0).
    anchor0 = max(0, cos(0, 3) - cos(0, 2) + 0.5)
    anchor3 = max(0, cos(3, 2) - cos(3, 4) + 0.5)
    assert out.loss.item() == pytest.approx((anchor0 + anchor3 + anchor0) / 3, rel=1e-5)


# ---- one epoch -----------------------------------------------------------------------------


def test_train_epoch_reduces_the_loss_and_reports_throughput():
    train = random_train(n_users=80, n_items=40, density=0.15, seed=5)
    torch.manual_seed(0)
    table = torch.nn.Embedding(40, 8)
    optimizer = torch.optim.Adam(table.parameters(), lr=0.05)
    step = make_pair_step(table, LikedItems(train), TrainConfig(mining="semi-hard"))
    sampler = PairSampler(train, 32)
    seed = 0
    first = train_epoch(step, sampler.batches(epoch_rng(seed, 0), 10), optimizer)
    for e in range(1, 8):
        last = train_epoch(step, sampler.batches(epoch_rng(seed, e), 10), optimizer)
    assert first["steps"] == 10 and first["seconds"] > 0 and first["pairs_per_s"] > 0
    assert last["loss"] < first["loss"]


def test_train_epoch_stops_on_a_non_finite_loss():
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=0.1)
    with pytest.raises(TrainingError, match="loss is nan at step 2"):
        train_epoch(lambda b: param.sum() * b["x"].sum(), [{"x": torch.ones(2)}, {"x": torch.tensor([math.nan])}],
                    optimizer)


def test_gathers_are_the_identity_without_a_process_group():
    x = torch.randn(3, 2, requires_grad=True)
    assert gather_with_grad(x) is x and gather(x) is x


# ---- two real ranks (gloo on CPU) ----------------------------------------------------------

N_LOCAL, DIM, N_ITEMS = 3, 4, 12


def _global_batch():
    """Pairs of both ranks (rank 0 holds rows 0-2, rank 1 rows 3-5) and their embeddings."""
    anchors = torch.tensor([0, 1, 2, 3, 4, 5])
    positives = torch.tensor([6, 7, 8, 9, 10, 11])
    users = torch.tensor([0, 1, 2, 3, 0, 1])
    g = torch.Generator().manual_seed(0)
    za = torch.randn(6, DIM, generator=g)
    zp = torch.randn(6, DIM, generator=g)
    # Rank 1's positive item 9 (user 3's) is a near copy of anchor 0: user 0 never liked it, so
    # it is anchor 0's hardest valid negative, and it lives on the other rank.
    zp[3] = za[0] + 0.01
    train = np.zeros((4, N_ITEMS), dtype=np.float32)
    train[users.numpy(), anchors.numpy()] = 1
    train[users.numpy(), positives.numpy()] = 1
    return anchors, positives, users, za, zp, sp.csr_matrix(train)


def _rank_main(rank: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        anchors, positives, users, za, zp, train = _global_batch()
        part = slice(rank * N_LOCAL, (rank + 1) * N_LOCAL)
        za_local = za[part].clone().requires_grad_(True)
        zp_local = zp[part].clone().requires_grad_(True)
        gathered = gather_with_grad(za_local)
        out = pair_loss(za_local, zp_local, users[part], anchors[part], positives[part], LikedItems(train),
                        TrainConfig(mining="batch-hard", margin=0.2))
        out.loss.backward()
        torch.save({"gathered": gathered.detach(), "loss": out.loss.detach(), "negatives": out.negatives,
                    "candidate_items": out.candidate_items, "grad_a": za_local.grad, "grad_p": zp_local.grad},
                   os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_gloo_ranks_mine_from_the_global_batch_with_single_process_gradients(tmp_path: Path):
    mp.spawn(_rank_main, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]

    anchors, positives, users, za, zp, train = _global_batch()
    za_all, zp_all = za.clone().requires_grad_(True), zp.clone().requires_grad_(True)
    single = pair_loss(za_all, zp_all, users, anchors, positives, LikedItems(train),
                       TrainConfig(mining="batch-hard", margin=0.2))
    single.loss.backward()

    for r, result in enumerate(ranks):
        assert torch.equal(result["gathered"], za)  # concatenation of both ranks' batches
        assert result["loss"].item() == pytest.approx(single.loss.item(), rel=1e-6)
        assert torch.equal(result["negatives"], single.negatives)
        part = slice(r * N_LOCAL, (r + 1) * N_LOCAL)
        assert torch.allclose(result["grad_a"], za_all.grad[part], atol=1e-6)
        assert torch.allclose(result["grad_p"], zp_all.grad[part], atol=1e-6)
    # Anchor 0 (rank 0) mined candidate 3N+0 = rank 1's first positive, item 9.
    negative = int(ranks[0]["negatives"][0])
    assert negative == 2 * N_LOCAL + N_LOCAL  # positives block, rank 1's slice
    assert int(ranks[0]["candidate_items"][negative]) == 9
