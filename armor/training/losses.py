"""The metric-learning objectives on cosine similarity, and the pair-batch loss built from them.

``triplet_margin_loss`` is eq. 4.7 of the paper; ``info_nce`` is the contrastive alternative that
uses every valid in-batch negative at once. ``pair_loss`` gathers the global batch, mines and
scores it; ``make_pair_step`` turns an item encoder into the ``model_step`` that
``armor.training.loop.train_epoch`` runs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from armor.config import TrainConfig
from armor.training.triplets import LikedItems, gather, gather_with_grad, mine_negatives


def cosine_matrix(a: Tensor, b: Tensor, eps: float = 1e-8) -> Tensor:
    """(N, C) cosine similarities of the rows of a (N, D) and b (C, D)."""
    return F.normalize(a, dim=-1, eps=eps) @ F.normalize(b, dim=-1, eps=eps).T


def triplet_margin_loss(positive_sim: Tensor, negative_sim: Tensor, margin: float,
                        mask: Tensor | None = None) -> Tensor:
    """Eq. 4.7, ``mean(max(0, sim(a, n) - sim(a, p) + margin))`` over anchors; 0 for no anchors.

    ``mask`` (A,) bool restricts the mean to its True rows (0 when there are none) without a
    boolean index: the shapes do not depend on the data, so there is no device sync on CUDA.
    """
    if positive_sim.numel() == 0:
        return positive_sim.sum() * 0.0  # keeps the graph, so backward() still works
    hinge = F.relu(negative_sim - positive_sim + margin)  # (A,)
    if mask is None:
        return hinge.mean()
    return torch.where(mask, hinge, torch.zeros_like(hinge)).sum() / mask.sum().clamp(min=1)


def info_nce(sim: Tensor, positive_index: Tensor, valid: Tensor, temperature: float) -> Tensor:
    """Cross-entropy of each anchor's own positive among its positive and valid negatives.

    sim (N, C) cosine; positive_index (N,) column of each anchor's positive; valid (N, C) bool
    marks admissible negatives. Every other column (items the user also liked, the anchor) is
    masked out, so the loss never pushes a co-liked item away. Mean over anchors.
    """
    n = sim.shape[0]
    if n == 0:
        return sim.sum() * 0.0
    rows = torch.arange(n, device=sim.device)
    keep = valid.clone()
    keep[rows, positive_index] = True
    logits = (sim / temperature).masked_fill(~keep, float("-inf"))  # (N, C)
    return F.cross_entropy(logits, positive_index)


@dataclasses.dataclass
class PairLossOutput:
    loss: Tensor  # scalar, the global batch's loss
    negatives: Tensor  # (A,) column into the global candidates (triplet); -1 where none / InfoNCE
    found: Tensor  # (A,) bool: the anchor had at least one valid negative
    positive_sim: Tensor  # (A,)
    anchor_items: Tensor  # (A,) item of each anchor row, for inspection
    candidate_items: Tensor  # (C,) item of each candidate column


def pair_loss(z_anchor: Tensor, z_positive: Tensor, users: Tensor, anchors: Tensor, positives: Tensor,
              liked: LikedItems, config: TrainConfig, generator: torch.Generator | None = None,
              symmetric: bool = True) -> PairLossOutput:
    """The loss of the global batch of pairs, mined in-batch.

    z_anchor, z_positive (n, D) are this rank's embeddings; users, anchors, positives (n,) its ids.
    All are gathered over ranks first. Candidates (C = 2 * global n) are every anchor and every
    positive of the global batch. With ``symmetric`` each pair is used both ways (p as anchor of
    a), which doubles the triplets for the price of one encoder pass.

    Every rank computes this same global loss; gradients reach only its own slice (see
    ``gather_with_grad``), so summing the ranks' gradients gives the single-process gradient.
    With DDP, which averages, scale the loss by the world size (``train_epoch(grad_scale=...)``).
    Random mining must draw the same choices on every rank: seed ``generator`` identically.
    """
    # Ids come from the sampler on the CPU; every mask is built from them, so they go where the
    # embeddings are first (and NCCL gathers only device tensors).
    device = z_anchor.device
    users, anchors, positives = (t.to(device, non_blocking=True) for t in (users, anchors, positives))
    za = gather_with_grad(z_anchor)  # (N, D)
    zp = gather_with_grad(z_positive)  # (N, D)
    users, anchors, positives = gather(users), gather(anchors), gather(positives)  # (N,) each
    n = za.shape[0]
    candidates = torch.cat([za, zp])  # (C, D), C = 2N
    candidate_items = torch.cat([anchors, positives])  # (C,)
    own = torch.arange(n, device=za.device)
    if symmetric:
        anchor_z = candidates  # (A, D), A = 2N
        anchor_items = candidate_items
        anchor_users = torch.cat([users, users])
        positive_index = torch.cat([own + n, own])  # (A,)
    else:
        anchor_z, anchor_items, anchor_users, positive_index = za, anchors, users, own + n

    sim = cosine_matrix(anchor_z, candidates)  # (A, C)
    rows = torch.arange(sim.shape[0], device=sim.device)
    positive_sim = sim[rows, positive_index]  # (A,)
    valid = liked.negative_mask(anchor_users, anchor_items, candidate_items)  # (A, C)

    if config.objective == "infonce":
        loss = info_nce(sim, positive_index, valid, config.temperature)
        negatives = torch.full_like(positive_index, -1)
        found = valid.any(dim=1)
    else:
        if config.mining == "batch-hard":
            positive_sim = hardest_positive(sim, positive_sim, liked, anchor_users, anchor_items, candidate_items)
        index, found = mine_negatives(sim, positive_sim, valid, config.mining, config.margin, generator,
                                      config.semi_hard_fallback)
        negative_sim = sim.gather(1, index[:, None]).squeeze(1)  # (A,)
        loss = triplet_margin_loss(positive_sim, negative_sim, config.margin, mask=found)
        negatives = torch.where(found, index, torch.full_like(index, -1))
    return PairLossOutput(loss=loss, negatives=negatives, found=found, positive_sim=positive_sim.detach(),
                          anchor_items=anchor_items, candidate_items=candidate_items)


def hardest_positive(sim: Tensor, positive_sim: Tensor, liked: LikedItems, users: Tensor, anchors: Tensor,
                     candidates: Tensor) -> Tensor:
    """(A,) the least similar positive of each anchor in the batch (Hermans et al.'s batch-hard):
    among candidates its user liked in training, other than the anchor item itself; the pair's own
    positive is one of them, so every anchor has one."""
    positive = liked.contains(users[:, None], candidates[None, :]) & (candidates[None, :] != anchors[:, None])  # (A, C)
    hardest = torch.where(positive, sim, torch.full_like(sim, float("inf"))).min(dim=1).values  # (A,)
    return torch.minimum(hardest, positive_sim)


def make_pair_step(encode: Callable[[Tensor], Tensor], liked: LikedItems, config: TrainConfig,
                   generator: torch.Generator | None = None) -> Callable[[dict[str, Tensor]], Tensor]:
    """A ``model_step`` for ``train_epoch``: encode a batch's items, return its ``pair_loss``.

    ``encode`` maps item indices (k,) to embeddings (k, D). Items repeat within a batch (popular
    movies), so each distinct item is encoded once and its embedding reused: a batch's "items"
    and "inverse" (``PairSampler.batches``) say which, else they are found here.
    """

    def step(batch: dict[str, Tensor]) -> Tensor:
        anchors, positives, users = batch["anchor"], batch["positive"], batch["user"]
        n = anchors.shape[0]
        if "items" in batch:  # PairSampler found the distinct items already (numpy, no sync)
            distinct, inverse = batch["items"], batch["inverse"]
        else:
            distinct, inverse = torch.unique(torch.cat([anchors, positives]), return_inverse=True)
        z = encode(distinct)  # (K, D)
        z = z[inverse.to(z.device, non_blocking=True)]  # (2n, D)
        return pair_loss(z[:n], z[n:], users, anchors, positives, liked, config, generator).loss

    return step
