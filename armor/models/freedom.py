"""FREEDOM (Zhou & Shen, ACM MM 2023: "A Tale of Two Graphs: Freezing and Denoising Graph
Structures for Multimodal Recommendation"), as the paper and MMRec's ``freedom.py`` define it.

Two graphs:

- **Frozen item-item graph** ``S``, built once from the features before training and never
  updated: per modality, each movie's ``knn_k`` most cosine-similar movies (itself included), every
  edge ``1 / k`` (MMRec's ``D^-1/2 A D^-1/2`` of a kNN graph, whose rows all have degree k), then a
  weighted sum over the modalities (``armor.models.content_graph.knn_item_graph``, one modality at a
  time). MMRec weights image 0.1 and text 0.9; we have two image modalities and give them
  ``image_weight`` (0.1) split equally, text the rest, and a movie that lacks a modality (the
  "impute" catalogue) has its row's weights renormalised over the modalities it has. One deviation
  comes with the shared helper: features are centred before the cosine (``feature_stats``' mean).
- **Denoised user-item graph**: before each epoch, ``int(E * (1 - dropout))`` of the E training
  edges are kept, sampled without replacement with probability proportional to ``1 / sqrt(d_u d_i)``
  (degrees in the full training graph; MMRec's ``torch.multinomial`` over the normalised edge values,
  here Efraimidis-Spirakis keys ``log(u) / w``, the same distribution), and the kept edges are
  renormalised by their own degrees. Scoring uses the full graph.

Model: LightGCN (``layers``, MMRec's n_ui_layers = 2) over the pruned user-item graph from ID
embeddings, plus ``item_layers`` (n_mm_layers = 1) products of ``S`` with the item ID embeddings::

    [h; y] = mean_{l=0..L} Â^l [E_user; E_item],   v_i = y_i + (S^{L'} E_item)_i,   score = h_u . v_i

Loss: BPR on (user, positive, negative) triples with uniform negatives, plus ``reg_weight`` times
one BPR term per modality of the user vector ``h_u`` against the linearly projected features of
the positive and the negative (MMRec's ``mf_t_loss`` and ``mf_v_loss``: here text, poster and
thumbnail). No L2 (MMRec's weight_decay is 0). Adam; xavier-uniform ID embeddings as MMRec.

Deviations, each for a reason: the raw features enter the alignment terms standardised and frozen
(MMRec wraps them in ``nn.Embedding(freeze=False)``, so Adam also moves them; they only feed the
alignment terms, the item graph being built from the originals, and moving 2,944 numbers per movie
cost most of an epoch); projections are computed for the batch's movies, not the whole catalogue
(the same values; O(batch) on large catalogues). A movie with no positive in the training matrix
has no ID embedding (0 at layer 0): MMRec's splits have no such movie, and its free vector would
only ever be a sampled negative; so a new movie's vector is ``S`` over its content neighbours' ID
embeddings.

A user the model never trained is their profile alone (the cosine of their liked items' mean vector
with every item's vector: what the FAISS pyfunc serves); a known user is scored by dot products,
which the pyfunc's cosine does not reproduce.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from armor.config import from_dict
from armor.errors import ArmorError, ConfigError, DataError
from armor.models import graph_ops
from armor.models.base import TrainableRecommender
from armor.models.content_graph import FixedSpMM, knn_item_graph
from armor.models.fusion import MODALITIES
from armor.models.hybrid_configs import FREEDOMConfig
from armor.models.hybrid_ops import ContentScaler, LearnedVectors, without_positive
from armor.models.lightgcn import NegativeSampler
from armor.training.schedule import Schedule

if TYPE_CHECKING:
    from armor.training.trainer import Streams

IMAGES = ("poster", "thumbnail")


def frozen_item_graph(features: Mapping[str, np.ndarray], present: Mapping[str, np.ndarray] | None, k: int,
                      image_weight: float) -> sp.csr_matrix:
    """(I, I) float32 CSR: the weighted sum of the per-modality kNN graphs (see the module docstring)."""
    names = [m for m in MODALITIES if m in features]
    if not names:
        raise DataError("freedom's item graph needs at least one of text, poster, thumbnail features")
    n_items = int(np.asarray(features[names[0]]).shape[0])
    images = [m for m in names if m in IMAGES]
    base = {m: (image_weight / len(images) if m in images else 1.0 - image_weight) for m in names}
    if not images or "text" not in names:  # one kind of content only: it is the whole graph
        base = {m: 1.0 / len(names) for m in names}
    has = {m: np.ones(n_items, bool) if present is None or m not in present else np.asarray(present[m], bool)
           for m in names}
    weight = np.stack([base[m] * has[m] for m in names])  # (M, I)
    weight /= np.maximum(weight.sum(axis=0), 1e-12)
    total = sp.csr_matrix((n_items, n_items), dtype=np.float32)
    for row, m in zip(weight, names):
        graph = knn_item_graph({m: features[m]}, None if present is None or m not in present else {m: present[m]}, k)
        total = total + sp.diags(row.astype(np.float32)) @ graph
    total = sp.csr_matrix(total, dtype=np.float32)
    total.eliminate_zeros()
    total.sort_indices()
    return total


def edge_weights(users: np.ndarray, items: np.ndarray, n_users: int, n_items: int) -> np.ndarray:
    """(E,) ``1 / sqrt(d_u d_i)`` of each training edge, degrees over all of them (MMRec's edge values)."""
    d_u = np.bincount(users, minlength=n_users).astype(np.float64)
    d_i = np.bincount(items, minlength=n_items).astype(np.float64)
    return 1.0 / np.sqrt(d_u[users] * d_i[items])


def prune_edges(weights: np.ndarray, dropout: float, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of the ``int(E * (1 - dropout))`` edges kept (at least one): a weighted sample
    without replacement, probability proportional to ``weights``, by Efraimidis-Spirakis keys
    ``log(u) / w`` (the largest keys are the sample; the same law as successive draws)."""
    n_keep = max(1, int(weights.size * (1.0 - dropout)))
    if n_keep >= weights.size:
        return np.arange(weights.size)
    keys = np.log1p(-rng.random(weights.size)) / weights  # (E,) in (-inf, 0]
    return np.sort(np.argpartition(-keys, n_keep - 1)[:n_keep])


class _Parameters(nn.Module):
    def __init__(self, n_users: int, n_items: int, dims: Mapping[str, int], cfg: FREEDOMConfig,
                 generator: torch.Generator):
        super().__init__()
        self.users = nn.Parameter(nn.init.xavier_uniform_(torch.empty(n_users, cfg.dim), generator=generator))
        self.items = nn.Parameter(nn.init.xavier_uniform_(torch.empty(n_items, cfg.dim), generator=generator))
        self.weight, self.bias = nn.ParameterDict(), nn.ParameterDict()
        for m, d in dims.items():  # nn.Linear's own initialisation, drawn from the run's generator
            bound = 1.0 / math.sqrt(d)
            weight = nn.init.kaiming_uniform_(torch.empty(cfg.dim, d), a=math.sqrt(5), generator=generator)
            self.weight[m] = nn.Parameter(weight)  # (dim, d_m)
            self.bias[m] = nn.Parameter(nn.init.uniform_(torch.empty(cfg.dim), -bound, bound, generator=generator))


class FREEDOM(LearnedVectors, TrainableRecommender):
    """FREEDOM; see the module docstring. ``features`` ({modality: (I, d_m)}) align with the catalogue;
    they are needed to fit, not to score a loaded model."""

    name = "freedom"

    def __init__(self, config: FREEDOMConfig | Mapping[str, Any] | None = None,
                 features: Mapping[str, np.ndarray] | None = None, present: Mapping[str, np.ndarray] | None = None,
                 *, device: str = "cpu", num_threads: int | None = None) -> None:
        self.config = config if isinstance(config, FREEDOMConfig) else (
            FREEDOMConfig() if config is None else from_dict(FREEDOMConfig, config, where="freedom"))
        self.device, self.num_threads = device, num_threads
        self.features, self.present = features, present
        self.user_vectors: np.ndarray | None = None  # (U, d)
        self.item_vectors: np.ndarray | None = None  # (I, d)
        self.cold: np.ndarray | None = None  # (I,) bool: no positive in the training matrix
        self.item_graph: sp.csr_matrix | None = None  # (I, I) the frozen item-item graph
        self._params: _Parameters | None = None
        self._stale = False

    # -- training, driven by armor.training.trainer.Trainer ----------------------------------
    def schedule(self) -> Schedule:
        cfg = self.config
        return Schedule(epochs=cfg.epochs, patience=cfg.patience, seed=cfg.seed, num_threads=self.num_threads)

    def begin(self, train: sp.csr_matrix, streams: Streams, *, rank: int = 0, world_size: int = 1) -> None:
        cfg = self.config
        if world_size != 1:
            raise ConfigError("freedom trains in one worker; pass --workers 1")
        if self.features is None:
            raise ArmorError("freedom was built without features; build it with the catalogue's features to fit")
        self._n_users, n_items = train.shape
        if next(iter(self.features.values())).shape[0] != n_items:
            raise DataError(f"train matrix has {n_items} item columns but the features have "
                            f"{next(iter(self.features.values())).shape[0]} rows; align them with SplitData.item_ids")
        coo = train.tocoo()
        self._pos_users, self._pos_items = coo.row.astype(np.int64), coo.col.astype(np.int64)  # (E,), (E,)
        if self._pos_users.size == 0:
            raise DataError("freedom: the training matrix has no positives")
        self._device = device = torch.device(self.device)
        self.cold = without_positive(train)
        self._has_id = torch.as_tensor(~self.cold, dtype=torch.float32, device=device)  # (I,)
        self._edge_weight = edge_weights(self._pos_users, self._pos_items, self._n_users, n_items)  # (E,)
        self._full_adjacency = graph_ops.normalized_adjacency_csr(train, device)  # (N, N): scoring's graph
        self.item_graph = frozen_item_graph(self.features, self.present, cfg.knn_k, cfg.image_weight)
        self._item_graph = (graph_ops.to_torch_csr(self.item_graph, device),
                            graph_ops.to_torch_csr(self.item_graph.T.tocsr(), device))
        scaler = ContentScaler.fit(self.features, self.present)
        self._modalities = {m: torch.from_numpy(scaler.transform_one(m, self.features[m], None if self.present is None
                                                                     else self.present.get(m))).to(device)
                            for m in scaler.modalities} if cfg.reg_weight > 0 else {}
        dims = {m: int(x.shape[1]) for m, x in self._modalities.items()}
        self._params = _Parameters(self._n_users, n_items, dims, cfg, streams.torch).to(device)
        self._optimizer = torch.optim.Adam(self._params.parameters(), lr=cfg.lr)
        self._sampler = NegativeSampler(train)
        self._stale = True

    def steps_per_epoch(self) -> int | None:
        return -(-self._pos_users.size // self.config.batch_size) if self._params is not None else None

    def _pruned_adjacency(self, rng: np.random.Generator) -> Tensor:
        """The epoch's denoised user-item graph (N, N): kept edges renormalised by their own degrees."""
        if self.config.dropout <= 0:
            return self._full_adjacency
        keep = prune_edges(self._edge_weight, self.config.dropout, rng)  # (E',)
        kept = sp.csr_matrix((np.ones(keep.size, np.float32), (self._pos_users[keep], self._pos_items[keep])),
                             shape=(self._n_users, self._has_id.shape[0]))
        return graph_ops.normalized_adjacency_csr(kept, self._device)

    def _forward(self, adjacency: Tensor, *, training: bool = True) -> tuple[Tensor, Tensor]:
        """(users (U, d), items (I, d)) over ``adjacency`` and the frozen item graph; ``training``
        picks the differentiable propagation."""
        p, cfg = self._params, self.config
        items0 = p.items * self._has_id[:, None]  # (I, d) no ID vector for a movie without positives
        nodes0 = torch.cat([p.users, items0])  # (N, d)
        propagate = graph_ops.propagate if training else graph_ops.propagate_inference
        nodes = propagate(adjacency, nodes0, cfg.layers)  # (N, d)
        content = items0
        for _ in range(cfg.item_layers):
            content = FixedSpMM.apply(*self._item_graph, content)  # (I, d) one product with S
        return nodes[:self._n_users], nodes[self._n_users:] + content

    def _batches(self, rng: np.random.Generator) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        order = rng.permutation(self._pos_users.size)
        for start in range(0, order.size, self.config.batch_size):
            batch = order[start:start + self.config.batch_size]
            users = self._pos_users[batch]
            yield users, self._pos_items[batch], self._sampler(rng, users)

    def _loss(self, adjacency: Tensor, users: np.ndarray, positives: np.ndarray,
              negatives: np.ndarray) -> tuple[Tensor, Tensor]:
        """(total, alignment) losses of a batch, with grad."""
        cfg, p, device = self.config, self._params, self._device
        b = users.size
        all_users, all_items = self._forward(adjacency)
        u = all_users.index_select(0, torch.as_tensor(users, device=device))  # (B, d)
        pair = torch.as_tensor(np.concatenate([positives, negatives]), device=device)  # (2B,)
        x = (u[None] * all_items.index_select(0, pair).view(2, b, -1)).sum(-1)  # (2, B)
        ranking = F.softplus(x[1] - x[0]).mean()  # -log sigmoid(x_up - x_un)
        align = ranking.new_zeros(())
        if cfg.reg_weight > 0:
            # Projected once per distinct movie of the batch (the same values as projecting them all).
            items, where = np.unique(np.concatenate([positives, negatives]), return_inverse=True)
            rows, at = torch.as_tensor(items, device=device), torch.as_tensor(where, device=device)
            for m, x_m in self._modalities.items():
                projected = x_m.index_select(0, rows) @ p.weight[m].T + p.bias[m]  # (k, d)
                y = (u[None] * projected.index_select(0, at).view(2, b, -1)).sum(-1)  # (2, B)
                align = align + F.softplus(y[1] - y[0]).mean()
        return ranking + cfg.reg_weight * align, align

    def train_epoch(self, epoch: int, streams: Streams) -> dict[str, float]:
        assert self._params is not None, "begin() first"
        adjacency = self._pruned_adjacency(streams.numpy)  # MMRec's pre_epoch_processing
        totals = torch.zeros(2, dtype=torch.float64, device=self._device)  # summed where the losses live
        for users, positives, negatives in self._batches(streams.numpy):
            loss, align = self._loss(adjacency, users, positives, negatives)
            self._optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self._optimizer.step()
            totals += torch.stack([loss.detach(), align.detach()]).double() * users.size
            self.steps_done(1)
        self._stale = True
        loss, align = (totals / self._pos_users.size).tolist()  # one device sync per epoch
        return {"loss": loss, "align": align}

    def state_dict(self) -> dict[str, Any]:
        assert self._params is not None, "begin() first"
        return {"params": copy.deepcopy(self._params.state_dict()),
                "optimizer": copy.deepcopy(self._optimizer.state_dict())}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        assert self._params is not None, "begin() first"
        for key, value in self._params.state_dict().items():
            if key not in state["params"] or tuple(state["params"][key].shape) != tuple(value.shape):
                raise DataError(f"freedom resume state has no {key} of shape {tuple(value.shape)}: "
                                "another split or config")
        self._params.load_state_dict(state["params"])
        self._optimizer.load_state_dict(state["optimizer"])
        self._stale = True

    def snapshot(self) -> tuple[np.ndarray, np.ndarray]:
        self._refresh()
        return self.user_vectors.copy(), self.item_vectors.copy()

    def restore(self, snapshot: tuple[np.ndarray, np.ndarray]) -> None:
        self.user_vectors, self.item_vectors = (a.copy() for a in snapshot)
        self._stale = False

    def end(self) -> None:
        self._refresh()
        self._params = self._optimizer = self._sampler = None
        self._full_adjacency = self._item_graph = self._modalities = None

    def _final_tensors(self) -> tuple[Tensor, Tensor]:
        """(users (U, d), items (I, d)) over the full user-item graph, on the model's device."""
        with torch.no_grad():
            return self._forward(self._full_adjacency, training=False)

    # -- persistence (scoring: LearnedVectors) -------------------------------------------------
    def arrays(self) -> dict[str, np.ndarray]:
        self._refresh()
        if self.user_vectors is None or self.item_vectors is None:
            return {}
        return {"user_final": self.user_vectors, "item_final": self.item_vectors, "cold": self.cold}

    def load_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        self.user_vectors = np.asarray(arrays["user_final"], np.float32)
        self.item_vectors = np.asarray(arrays["item_final"], np.float32)
        self.cold = np.asarray(arrays["cold"], bool)
        self._stale = False
