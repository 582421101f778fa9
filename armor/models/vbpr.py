"""VBPR (He & McAuley, AAAI 2016): BPR matrix factorisation plus a content term.

The paper's predictor is ``x_ui = alpha + beta_u + beta_i + gamma_u . gamma_i + theta_u . (E f_i) +
beta' . f_i``; ``alpha`` and ``beta_u`` are the same for a user's positive and negative and cancel
in the BPR loss, so this module learns::

    x_ui = beta_i + gamma_u . gamma_i + theta_u . (E f_i) + beta' . f_i

with ``f_i`` the movie's content (text, poster and thumbnail features side by side, as MMRec
concatenates its modalities; each modality standardised, ``armor.models.hybrid_ops``), ``E`` a
learned (K', D) projection and ``beta'`` a learned content bias. Training: BPR loss on (user,
positive, negative) triples, one pass over the training positives per epoch in shuffled
mini-batches, negatives uniform over the items the user has not liked (LightGCN's sampler), L2 on
the batch's ``gamma_u, theta_u, gamma_i, beta_i`` (``reg``, the paper's lambda_Theta, scaled as
LightGCN's) and on ``E, beta'`` (``content_reg``, the paper's lambda_E), Adam (as MMRec; the paper
used SGD).

Correspondence with MMRec's ``vbpr.py``: the same concatenation and projection; MMRec drops the two
bias terms and puts a bias on its projection (which cancels like ``beta_u``); we keep the paper's
biases and its bias-free ``E``. One rule MMRec never needs (its splits have no unrated items): a
movie with no positive in the training matrix has no ID factors (``gamma_i = 0``, ``beta_i = 0``),
so it is scored by its content term alone; its free vector would only ever be a sampled negative.

Scores are dot products: a known user is ``[gamma_u; theta_u; 1]``, an item ``[gamma_i; E f_i;
beta_i + beta' . f_i]`` (``item_embeddings``). A user the model never trained is their profile
alone: the cosine of their liked items' mean vector with every item's vector, which is what the
FAISS pyfunc serves for a history; for a known user the pyfunc's cosine differs from ``score``.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from armor.config import from_dict
from armor.errors import ArmorError, ConfigError, DataError
from armor.models.base import TrainableRecommender
from armor.models.hybrid_configs import VBPRConfig
from armor.models.hybrid_ops import ContentScaler, LearnedVectors, without_positive
from armor.models.lightgcn import NegativeSampler
from armor.training.schedule import Schedule

if TYPE_CHECKING:
    from armor.training.trainer import Streams

INIT_STD = 0.1  # ID factors, as LightGCN's authors initialise theirs


class _Parameters(nn.Module):
    def __init__(self, n_users: int, n_items: int, n_features: int, cfg: VBPRConfig, generator: torch.Generator):
        super().__init__()
        self.users = nn.Parameter(torch.randn(n_users, cfg.dim + cfg.content_dim, generator=generator)
                                  * INIT_STD)  # (U, K + K') [gamma_u; theta_u]
        self.items = nn.Parameter(torch.randn(n_items, cfg.dim, generator=generator) * INIT_STD)  # (I, K) gamma_i
        self.item_bias = nn.Parameter(torch.zeros(n_items))  # (I,) beta_i
        projection = torch.empty(cfg.content_dim, n_features)
        nn.init.xavier_normal_(projection, generator=generator)  # MMRec's init of its projection
        # Rows 0..K'-1: E; the last row: beta' (one product gives both content terms).
        self.content = nn.Parameter(torch.cat([projection, torch.zeros(1, n_features)]))  # (K' + 1, D)


class VBPR(LearnedVectors, TrainableRecommender):
    """VBPR; see the module docstring. ``features`` ({modality: (I, d_m)}) align with the catalogue;
    they are needed to fit, not to score a loaded model."""

    name = "vbpr"

    def __init__(self, config: VBPRConfig | Mapping[str, Any] | None = None,
                 features: Mapping[str, np.ndarray] | None = None, present: Mapping[str, np.ndarray] | None = None,
                 *, device: str = "cpu", num_threads: int | None = None) -> None:
        self.config = config if isinstance(config, VBPRConfig) else (
            VBPRConfig() if config is None else from_dict(VBPRConfig, config, where="vbpr"))
        self.device, self.num_threads = device, num_threads
        self.features, self.present = features, present
        self.user_vectors: np.ndarray | None = None  # (U, K + K' + 1), last column 1
        self.item_vectors: np.ndarray | None = None  # (I, K + K' + 1), last column the item's bias
        self.content_weight: np.ndarray | None = None  # (K' + 1, D): E, then beta'
        self.scaler: ContentScaler | None = None
        self.cold: np.ndarray | None = None  # (I,) bool: no positive in the training matrix
        self._params: _Parameters | None = None
        self._stale = False

    # -- training, driven by armor.training.trainer.Trainer ----------------------------------
    def schedule(self) -> Schedule:
        cfg = self.config
        return Schedule(epochs=cfg.epochs, patience=cfg.patience, seed=cfg.seed, num_threads=self.num_threads)

    def begin(self, train: sp.csr_matrix, streams: Streams, *, rank: int = 0, world_size: int = 1) -> None:
        if world_size != 1:
            raise ConfigError("vbpr trains in one worker; pass --workers 1")
        if self.features is None:
            raise ArmorError("vbpr was built without features; build it with the catalogue's features to fit")
        n_users, n_items = train.shape
        self.scaler = ContentScaler.fit(self.features, self.present)
        content = self.scaler.transform(self.features, self.present)  # (I, D)
        if content.shape[0] != n_items:
            raise DataError(f"train matrix has {n_items} item columns but the features have {content.shape[0]} "
                            "rows; align them with SplitData.item_ids")
        coo = train.tocoo()
        self._pos_users, self._pos_items = coo.row.astype(np.int64), coo.col.astype(np.int64)  # (P,), (P,)
        if self._pos_users.size == 0:
            raise DataError("vbpr: the training matrix has no positives")
        self._device = device = torch.device(self.device)
        self.cold = without_positive(train)
        self._has_id = torch.as_tensor(~self.cold, dtype=torch.float32, device=device)  # (I,)
        self._content = torch.from_numpy(content).to(device)  # (I, D)
        self._params = _Parameters(n_users, n_items, content.shape[1], self.config, streams.torch).to(device)
        self._optimizer = torch.optim.Adam(self._params.parameters(), lr=self.config.lr)
        self._sampler = NegativeSampler(train)
        self._stale = True

    def steps_per_epoch(self) -> int | None:
        return -(-self._pos_users.size // self.config.batch_size) if self._params is not None else None

    def _batches(self, rng: np.random.Generator) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """One epoch of (users, positives, negatives), int64 (B,) each."""
        order = rng.permutation(self._pos_users.size)
        for start in range(0, order.size, self.config.batch_size):
            batch = order[start:start + self.config.batch_size]
            users = self._pos_users[batch]
            yield users, self._pos_items[batch], self._sampler(rng, users)

    def _item_terms(self, items: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        """Of catalogue ``items`` (all when None): vectors [gamma_i; E f_i] (k, K + K'), biases
        beta_i + beta' . f_i (k,) and beta_i alone (k,); no ID terms for a movie without a training positive."""
        p = self._params
        features, gamma, bias, has = self._content, p.items, p.item_bias, self._has_id
        if items is not None:
            features, gamma = features.index_select(0, items), gamma.index_select(0, items)
            bias, has = bias.index_select(0, items), has.index_select(0, items)
        content = features @ p.content.T  # (k, K' + 1)
        id_bias = bias * has  # (k,)
        vectors = torch.cat([gamma * has[:, None], content[:, :-1]], dim=1)  # (k, K + K')
        return vectors, id_bias + content[:, -1], id_bias

    def _loss(self, users: np.ndarray, positives: np.ndarray, negatives: np.ndarray) -> Tensor:
        """BPR loss of the batch plus both L2 terms (with grad)."""
        cfg, p, device = self.config, self._params, self._device
        b = users.size
        # Each distinct item's content is projected once (a batch of 2,048 triples names ~1,500 of ML-100K's
        # 1,682 movies), and never the whole catalogue: its cost stays O(batch) on large catalogues.
        items, where = np.unique(np.concatenate([positives, negatives]), return_inverse=True)  # (k,), (2B,)
        vectors, biases, id_bias = self._item_terms(torch.as_tensor(items, device=device))  # (k, .), (k,), (k,)
        at = torch.as_tensor(where, device=device)  # (2B,)
        user = p.users.index_select(0, torch.as_tensor(users, device=device))  # (B, K + K')
        item = vectors.index_select(0, at).view(2, b, -1)  # (2, B, K + K')
        x = (user[None] * item).sum(-1) + biases.index_select(0, at).view(2, b)  # (2, B)
        ranking = F.softplus(x[1] - x[0]).mean()  # -log sigmoid(x_up - x_un)
        # The batch's gamma_u, theta_u, gamma_i, beta_i, each as often as it occurs (LightGCN's scaling).
        l2 = user.pow(2).sum() + item[:, :, :cfg.dim].pow(2).sum() + id_bias.index_select(0, at).pow(2).sum()
        return ranking + cfg.reg * l2 / (2 * b) + cfg.content_reg * p.content.pow(2).sum() / 2

    def train_epoch(self, epoch: int, streams: Streams) -> dict[str, float]:
        assert self._params is not None, "begin() first"
        total = torch.zeros((), dtype=torch.float64, device=self._device)  # summed where the loss lives
        for users, positives, negatives in self._batches(streams.numpy):
            loss = self._loss(users, positives, negatives)
            self._optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self._optimizer.step()
            total += loss.detach().double() * users.size
            self.steps_done(1)
        self._stale = True
        return {"loss": float(total) / self._pos_users.size}  # one device sync per epoch

    def state_dict(self) -> dict[str, Any]:
        assert self._params is not None, "begin() first"
        return {"params": copy.deepcopy(self._params.state_dict()),
                "optimizer": copy.deepcopy(self._optimizer.state_dict())}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        assert self._params is not None, "begin() first"
        for key, value in self._params.state_dict().items():
            if tuple(state["params"][key].shape) != tuple(value.shape):
                raise DataError(f"vbpr resume state has {key} of shape {tuple(state['params'][key].shape)}, this "
                                f"model needs {tuple(value.shape)}: another split or config")
        self._params.load_state_dict(state["params"])
        self._optimizer.load_state_dict(state["optimizer"])
        self._stale = True

    def snapshot(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        self._refresh()
        return self.user_vectors.copy(), self.item_vectors.copy(), self.content_weight.copy()

    def restore(self, snapshot: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
        self.user_vectors, self.item_vectors, self.content_weight = (a.copy() for a in snapshot)
        self._stale = False

    def end(self) -> None:
        self._refresh()
        self._params = self._optimizer = self._sampler = self._content = None

    def _final_tensors(self) -> tuple[Tensor, Tensor]:
        """(users (U, K + K' + 1), items (I, K + K' + 1)) of the current weights, on their device."""
        with torch.no_grad():
            vectors, biases, _ = self._item_terms(None)
            users = self._params.users.detach()
            ones = torch.ones(users.shape[0], 1, dtype=users.dtype, device=users.device)
            return torch.cat([users, ones], dim=1), torch.cat([vectors, biases[:, None]], dim=1)

    def _refreshed(self) -> None:
        self.content_weight = self._params.content.detach().cpu().numpy().astype(np.float32)

    # -- scoring and persistence -------------------------------------------------------------
    def content_vectors(self, features: Mapping[str, np.ndarray],
                        present: Mapping[str, np.ndarray] | None = None) -> np.ndarray:
        """(n, K + K' + 1): the item vectors of movies with these features and no rating (no ID terms)."""
        self._refresh()
        if self.content_weight is None or self.scaler is None:
            raise ArmorError("vbpr content_vectors called before fit (or load)")
        content = self.scaler.transform(features, present) @ self.content_weight.T  # (n, K' + 1)
        ids = np.zeros((content.shape[0], self.config.dim), np.float32)
        return np.concatenate([ids, content], axis=1).astype(np.float32)

    def arrays(self) -> dict[str, np.ndarray]:
        self._refresh()
        if self.user_vectors is None or self.item_vectors is None:
            return {}
        out = {"user_vectors": self.user_vectors, "item_vectors": self.item_vectors,
               "content_weight": self.content_weight, "cold": self.cold}
        return {**out, **(self.scaler.arrays("scaler") if self.scaler is not None else {})}

    def load_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        self.user_vectors = np.asarray(arrays["user_vectors"], np.float32)
        self.item_vectors = np.asarray(arrays["item_vectors"], np.float32)
        self.content_weight = np.asarray(arrays["content_weight"], np.float32)
        self.cold = np.asarray(arrays["cold"], bool)
        self.scaler = ContentScaler.from_arrays(arrays, "scaler")
        self._stale = False
