"""ARMoR-Graph: graph collaborative filtering with a frozen content graph, a profile-aware user
vector and an aligned content path for movies nobody has rated.

Sources (LightGCN, He et al. 2020; FREEDOM, Zhou & Shen 2023; LATTICE, Zhang et al. 2021; the
content/collaborative alignment of BM3, Zhou et al. 2023), each switchable for the ablations::

    f_i    = fusion(PCA(text_i), PCA(poster_i), PCA(thumbnail_i))   content vector, content alone
    x_i    = e_i (an ID embedding) if item i has training positives, else 0 (f_i without IDs)
    [h; y] = P [E_user; x],  P = (I + Â + ... + Â^L) / (L + 1)     LightGCN over the user-item graph
    v_i    = unit(y_i + S x_i)                                      + one hop over the frozen item-item
                                                                    kNN graph S of the raw features
    v_i    = unit(f_i) for a new movie (no positive in the training matrix), with
             new_item_vector = "content"; by default ("neighbours") it keeps v_i above, which
             for a new movie is unit(S x_i): its content-graph neighbours' ID embeddings
    z_u    = unit(unit(h_u) + beta unit(p_u)),  p_u = mean of v_j over the user's profile
    z_u    = unit(p_u) for a user the model never trained (a history is all there is)
    score(u, i) = <z_u, v_i>

The profile term folds in the profile the evaluator hands it (train on validation; train +
validation on test, the paper's rule), as the content models, ItemKNN, EASE and ALS do; in
training, the target item is left out of its own profile mean. Measured on ML-100K's validation
splits it did not help a known user (NDCG@10 with beta 0 / 0.5 / 1: leave-one-out 0.0699 / 0.0670
/ 0.0662, random 0.2178 / 0.2139 / 0.2086), so beta defaults to 0; a user the model never saw is
always their profile, which is what the FAISS pyfunc serves for a history. The objective is a
sampled softmax over the batch's positive items (log-Q corrected, temperature on cosines) plus
``align_weight`` times an InfoNCE term that makes each batch item's content vector pick out its
own (stopped-gradient) final vector: content alone must predict where collaboration puts a movie,
which is all a new movie has. Propagation runs on ``armor.models.graph_ops``; the module never
imports Ray and knows nothing of files.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from armor.config import ArmorGraphConfig, FusionConfig, from_dict
from armor.errors import ArmorError, ConfigError, DataError
from armor.models import graph_ops
from armor.models.base import TrainableRecommender
from armor.models.content_graph import FixedSpMM, knn_item_graph, principal_components, reduce_features
from armor.models.fusion import MODALITIES, build_fusion, feature_stats
from armor.training.schedule import Schedule

if TYPE_CHECKING:
    from armor.training.trainer import Streams

INIT_STD = 0.1  # LightGCN authors' initialisation of ID embeddings
_STATE_PREFIX = "state."


# The ablation table: slug -> (its row's label, the settings it switches off). A trained ablation is
# saved as ``armor-graph~<slug>`` beside the full model.
ABLATIONS: dict[str, tuple[str, dict[str, Any]]] = {
    "no-content": ("without the content side", {"content": False, "align_weight": 0.0}),
    "no-content-graph": ("without the content graph", {"content_graph": False}),
    "no-alignment": ("without the alignment term", {"align_weight": 0.0}),
    "no-ids": ("without ID embeddings (content vectors at layer 0)", {"id_embeddings": False}),
}


def _as_config(config: ArmorGraphConfig | Mapping[str, Any] | None) -> ArmorGraphConfig:
    if config is None or isinstance(config, ArmorGraphConfig):
        return config or ArmorGraphConfig()
    return from_dict(ArmorGraphConfig, config, where="armor_graph")


def _unit(x: Tensor) -> Tensor:
    return F.normalize(x, dim=-1)


class _Parameters(nn.Module):
    """Everything ARMoR-Graph learns: the ID embeddings and the fusion module."""

    def __init__(self, n_users: int, n_items: int, config: ArmorGraphConfig, dims: Mapping[str, int] | None,
                 stats: Mapping[str, tuple[np.ndarray, np.ndarray]] | None, generator: torch.Generator):
        super().__init__()
        d = config.dim
        self.users = nn.Parameter(torch.randn(n_users, d, generator=generator) * INIT_STD)  # (U, d)
        self.items = nn.Parameter(torch.randn(n_items, d, generator=generator) * INIT_STD)  # (I, d)
        self.fusion: nn.Module | None = None
        if config.content:
            assert dims is not None
            fusion = FusionConfig(variant=config.fusion_variant, dim=config.fusion_dim, out_dim=d,
                                  heads=config.heads, dropout=config.fusion_dropout)
            self.fusion = build_fusion(fusion, dims, stats)


class GraphHybrid(TrainableRecommender):
    """ARMoR-Graph; see the module docstring. ``features`` ({modality: (I, d_m)}) align with the
    catalogue columns; they are needed to fit, not to score a loaded model. A movie without a
    positive in the training matrix is new to the model and scored by its content-graph
    neighbours or its content vector (``new_item_vector``): the model knows nothing else about
    which movies a split held out."""

    name = "armor-graph"

    def __init__(self, config: ArmorGraphConfig | Mapping[str, Any] | None = None,
                 features: Mapping[str, np.ndarray] | None = None, present: Mapping[str, np.ndarray] | None = None,
                 *, dims: Mapping[str, int] | None = None, device: str = "cpu",
                 num_threads: int | None = 1) -> None:
        self.config = _as_config(config)
        self.device, self.num_threads = device, num_threads
        self.features = None if features is None else {m: np.asarray(v, np.float32) for m, v in features.items()
                                                        if m in MODALITIES}
        self.present = None if present is None else {m: np.asarray(v, bool) for m, v in present.items()}
        if self.features is not None:
            dims = {m: int(v.shape[1]) for m, v in self.features.items()}
        self.dims = None if dims is None else {m: int(v) for m, v in dims.items()}
        self.user_final: np.ndarray | None = None  # (U, d) unit vectors of the learned users
        self.item_final: np.ndarray | None = None  # (I, d) unit scoring vectors
        self.item_content: np.ndarray | None = None  # (I, d) f_i, the content vector alone
        self.cold: np.ndarray | None = None  # (I,) bool: items with no training positive
        self.fusion_state: dict[str, np.ndarray] = {}
        self.components: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # modality -> PCA (mean, axes)
        self._params: _Parameters | None = None
        self._rank, self._world_size = 0, 1
        self._stale = False

    # -- training, driven by armor.training.trainer.Trainer ----------------------------------
    def schedule(self) -> Schedule:
        cfg = self.config
        return Schedule(epochs=cfg.epochs, patience=cfg.patience, seed=cfg.seed, num_threads=self.num_threads)

    def begin(self, train: sp.csr_matrix, streams: Streams, *, rank: int = 0, world_size: int = 1) -> None:
        cfg = self.config
        if world_size > 1 and not (dist.is_available() and dist.is_initialized()):
            raise ConfigError(f"armor-graph with {world_size} workers needs torch.distributed initialised "
                              "(Ray Train does it); run one worker otherwise")
        self._rank, self._world_size = rank, world_size
        if (cfg.content or cfg.content_graph) and self.features is None:
            raise ArmorError("armor-graph was built without features; build it with the catalogue's features to fit")
        n_users, n_items = train.shape
        if self.features is not None and next(iter(self.features.values())).shape[0] != n_items:
            raise DataError(f"train matrix has {n_items} item columns but the features have "
                            f"{next(iter(self.features.values())).shape[0]} rows; align them with SplitData.item_ids")
        self._device = device = torch.device(self.device)
        coo = train.tocoo()
        self._pos_users, self._pos_items = coo.row.astype(np.int64), coo.col.astype(np.int64)  # (P,), (P,)
        if self._pos_users.size == 0:
            raise DataError("armor-graph: the training matrix has no positives")
        self._n_users = n_users
        self._graphs(train, device)
        stats, dims = self._prepare_content(device)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)  # the fusion's own init draws from the global RNG
            self._params = _Parameters(n_users, n_items, cfg, dims, stats, streams.torch).to(device)
        self._optimizer = torch.optim.Adam(self._params.parameters(), lr=cfg.lr)
        self._stale = True

    def _graphs(self, train: sp.csr_matrix, device: torch.device) -> None:
        """The user-item graph, the content graph, the profile matrix and the softmax's log-Q."""
        cfg = self.config
        degree = np.bincount(self._pos_items, minlength=train.shape[1])  # (I,)
        self.cold = degree == 0
        self._has_id = torch.as_tensor(~self.cold & cfg.id_embeddings, dtype=torch.float32, device=device)  # (I,)
        # log of the chance that an item is among a batch's positives (the sampled softmax's correction)
        share = degree / degree.sum()
        global_batch = cfg.batch_size * self._world_size
        inclusion = -np.expm1(min(global_batch, degree.sum()) * np.log1p(-np.minimum(share, 1 - 1e-7)))
        self._log_q = torch.as_tensor(np.log(np.maximum(inclusion, 1e-12)), dtype=torch.float32, device=device)
        self._adjacency = graph_ops.normalized_adjacency_csr(train, device)  # (N, N)
        binary = sp.csr_matrix(train, dtype=np.float32)
        binary.data[:] = 1.0
        self._profiles = graph_ops.to_torch_csr(binary, device)  # (U, I): profile sums in one product
        self._profile_size = torch.as_tensor(np.diff(binary.indptr), dtype=torch.float32, device=device)  # (U,)
        self._item_graph = None
        if cfg.content_graph:
            graph = knn_item_graph(self.features, self.present, cfg.knn_k)  # (I, I)
            self._item_graph = (graph_ops.to_torch_csr(graph, device), graph_ops.to_torch_csr(graph.T.tocsr(), device))

    def _prepare_content(self, device: torch.device) -> tuple[dict | None, dict | None]:
        """The fusion's inputs (PCA-reduced features, kept as tensors); (their stats, their dims)."""
        self._inputs = None
        if not self.config.content:
            return None, None
        inputs = self.features
        if self.config.reduce_dim:
            self.components = principal_components(self.features, self.present, self.config.reduce_dim)
            inputs = reduce_features(self.features, self.present, self.components)
        self._inputs = ({m: torch.from_numpy(x).to(device) for m, x in inputs.items()},
                        None if self.present is None else
                        {m: torch.from_numpy(p).to(device) for m, p in self.present.items()})
        return feature_stats(inputs, self.present), {m: int(x.shape[1]) for m, x in inputs.items()}

    def _content(self, items: Tensor | None = None) -> Tensor:
        """f: the fusion's output for catalogue ``items`` (k,), or for all items; (k, d)."""
        features, present = self._inputs
        if items is not None:
            features = {m: x.index_select(0, items) for m, x in features.items()}
            present = None if present is None else {m: p.index_select(0, items) for m, p in present.items()}
        return self._params.fusion(features, present)[0]  # (k, d)

    def _forward(self) -> tuple[Tensor, Tensor, Tensor | None]:
        """(users h (U, d), items v (I, d) unit, f (I, d) when it was needed for every item, else None)."""
        params, cfg = self._params, self.config
        assert params is not None, "begin() first"
        content = None if cfg.id_embeddings else self._content()  # (I, d) the layer-0 items without IDs
        items0 = params.items * self._has_id[:, None] if cfg.id_embeddings else content  # (I, d)
        nodes = graph_ops.propagate(self._adjacency, torch.cat([params.users, items0]), cfg.layers)  # (N, d)
        users, items = nodes[:self._n_users], nodes[self._n_users:]  # (U, d), (I, d)
        if self._item_graph is not None:
            items = items + FixedSpMM.apply(*self._item_graph, items0)  # (I, d) one hop over content
        return users, _unit(items), content

    def _user_vectors(self, users: Tensor, profile: Tensor) -> Tensor:
        """z_u = unit(unit(h_u) + beta unit(profile mean)); (B, d) each."""
        return _unit(_unit(users) + self.config.profile_weight * _unit(profile))

    def _batches(self, rng: np.random.Generator) -> Iterator[tuple[np.ndarray, np.ndarray, slice]]:
        """One epoch of global batches of ``batch_size * world_size`` (users, positives), int64 numpy
        (B,), the training positives shuffled alike on every rank, and this rank's rows of each."""
        per_rank = self.config.batch_size
        size = per_rank * self._world_size
        order = rng.permutation(self._pos_users.size)
        for start in range(0, order.size, size):
            batch = order[start : start + size]
            mine = slice(self._rank * per_rank, (self._rank + 1) * per_rank)
            yield self._pos_users[batch], self._pos_items[batch], mine

    def steps_per_epoch(self) -> int | None:
        if self._params is None:
            return None
        return -(-self._pos_users.size // (self.config.batch_size * self._world_size))

    def _loss(self, users: np.ndarray, positives: np.ndarray, mine: slice,
              rng: np.random.Generator) -> tuple[Tensor, Tensor, Tensor]:
        """This rank's share of the global batch's (total, ranking, alignment) losses: summed over
        the ranks they are the single-process losses of the whole batch, so summing the ranks'
        gradients gives its gradient. The softmax's candidates are the whole batch's positives, or
        ``sampled_candidates`` of them shared by every row (``rng`` draws the same on every rank)."""
        cfg, params, device = self.config, self._params, self._device
        all_users, all_items, content = self._forward()
        candidates, target = np.unique(positives, return_inverse=True)  # (C,), (B,)
        picked = None
        if 0 < cfg.sampled_candidates < candidates.size:
            picked = np.sort(rng.choice(candidates.size, cfg.sampled_candidates, replace=False))  # (n,) of C
        n_batch = users.size
        share = len(users[mine]) / n_batch
        users, positives, target = users[mine], positives[mine], target[mine]  # (b,) this rank's rows
        cand = torch.as_tensor(candidates, device=device)
        u = torch.as_tensor(users, device=device)
        v = all_items.index_select(0, cand)  # (C, d) unit
        profile = torch.zeros_like(all_users.index_select(0, u))  # (b, d)
        if cfg.profile_weight > 0:
            sums = graph_ops.spmm(self._profiles, all_items).index_select(0, u)  # (b, d)
            own = all_items.index_select(0, torch.as_tensor(positives, device=device))  # (b, d)
            # The target leaves its own profile mean: at test time it is never in the profile.
            profile = (sums - own) / (self._profile_size.index_select(0, u) - 1).clamp(min=1)[:, None]
        z = self._user_vectors(all_users.index_select(0, u), profile)  # (b, d)
        ranking = v.new_zeros(())
        if users.size:
            logits, target = self._ranking_logits(z, v, cand, target, picked)
            ranking = F.cross_entropy(logits, torch.as_tensor(target, dtype=torch.int64, device=device)) * share
        align = content_rank = ranking.new_zeros(())
        if cfg.content and (cfg.align_weight > 0 or cfg.content_rank_weight > 0):
            rows = np.arange(candidates.size) if picked is None else picked  # (S,) positions in C
            mine_ = torch.as_tensor(rows, device=device)
            f = _unit(self._content(cand[mine_]) if content is None else content.index_select(0, cand[mine_]))  # (S, d)
            # the same on every rank: each carries 1 / world_size
            align = F.cross_entropy(f @ v.detach().T / cfg.align_temperature, mine_) / self._world_size  # (S, C)
            if cfg.content_rank_weight > 0 and users.size:
                content_rank = self._content_ranking(z, f, rows, target, cand) * share
        touched = torch.as_tensor(np.concatenate([users, positives + self._n_users]), device=device)  # (2b,)
        l2 = torch.cat([params.users, params.items]).index_select(0, touched).pow(2).sum() / (2 * n_batch)
        total = ranking + cfg.align_weight * align + cfg.content_rank_weight * content_rank + cfg.reg * l2
        return total, ranking, align

    def _content_ranking(self, z: Tensor, f: Tensor, rows: np.ndarray, target: np.ndarray, cand: Tensor) -> Tensor:
        """The users' (stopped-gradient) vectors rank the content vectors ``f`` (S, d) of the candidates
        at ``rows`` (positions in C): the softmax of each row whose positive is among them, log-Q
        corrected. It trains the content path to be scored the way a new movie is scored, by a user
        vector against its content vector, without moving any warm-movie score."""
        position = np.full(cand.numel(), -1)
        position[rows] = np.arange(rows.size)
        kept = np.flatnonzero(position[target] >= 0)  # rows whose positive has a content vector here
        if kept.size == 0:
            return f.new_zeros(())
        kept_t = torch.as_tensor(kept, device=z.device)
        logits = z.detach().index_select(0, kept_t) @ f.T / self.config.temperature  # (k, S)
        logits = logits - self._log_q.index_select(0, cand[torch.as_tensor(rows, device=z.device)])[None, :]
        targets = torch.as_tensor(position[target[kept]], dtype=torch.int64, device=z.device)
        return F.cross_entropy(logits, targets) * (kept.size / target.size)

    def _ranking_logits(self, z: Tensor, v: Tensor, cand: Tensor, target: np.ndarray,
                        picked: np.ndarray | None) -> tuple[Tensor, np.ndarray]:
        """(logits, targets) of the sampled softmax. Every candidate: (b, C) against the batch's
        positives. Sampled: each row's own positive, then the n shared candidates, (b, 1 + n), a
        shared one that is the row's positive masked; log-Q corrected by each one's chance of being
        there (a shared one: of being a batch positive, times n / C), so the sampled loss estimates
        the full one."""
        cfg = self.config
        log_q = self._log_q.index_select(0, cand)  # (C,)
        if picked is None:
            return z @ v.T / cfg.temperature - log_q[None, :], target  # (b, C)
        rows = torch.as_tensor(target, device=z.device)  # (b,) positions in C
        shared = torch.as_tensor(picked, device=z.device)  # (n,)
        own = (z * v.index_select(0, rows)).sum(-1, keepdim=True) / cfg.temperature - log_q[rows][:, None]  # (b, 1)
        thinned = float(np.log(picked.size / cand.numel()))
        others = z @ v.index_select(0, shared).T / cfg.temperature - (log_q[shared] + thinned)[None, :]  # (b, n)
        others = others.masked_fill(rows[:, None] == shared[None, :], float("-inf"))
        return torch.cat([own, others], dim=1), np.zeros(z.shape[0], dtype=np.int64)

    def train_epoch(self, epoch: int, streams: Streams) -> dict[str, float]:
        assert self._params is not None, "begin() first"
        self._params.train()
        totals = torch.zeros(3, dtype=torch.float64, device=self._device)  # summed where the losses live
        with streams.global_torch():  # the fusion's dropout: seeded, saved, and the same on every rank
            for users, positives, mine in self._batches(streams.numpy):
                loss, ranking, align = self._loss(users, positives, mine, streams.numpy)
                self._optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self._sum_gradients_over_ranks()
                self._optimizer.step()
                totals += torch.stack([loss, ranking, align]).detach().double() * users.size
                self.steps_done(1)
        if self._world_size > 1:
            dist.all_reduce(totals)
        self._params.eval()
        self._stale = True
        loss, ranking, align = (totals / self._pos_users.size).tolist()  # one device sync per epoch
        return {"loss": loss, "ranking": ranking, "align": align}

    def _sum_gradients_over_ranks(self) -> None:
        """Every rank holds its share's gradient of the whole batch's loss; their sum is that
        gradient, so identical Adam steps keep the replicas identical."""
        if self._world_size == 1:
            return
        for parameter in self._params.parameters():
            if parameter.grad is None:
                parameter.grad = torch.zeros_like(parameter)
            dist.all_reduce(parameter.grad)

    def state_dict(self) -> dict[str, Any]:
        assert self._params is not None, "begin() first"
        return {"params": copy.deepcopy(self._params.state_dict()),
                "optimizer": copy.deepcopy(self._optimizer.state_dict())}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        assert self._params is not None, "begin() first"
        mine = self._params.state_dict()
        for key, value in state["params"].items():
            if key not in mine or tuple(mine[key].shape) != tuple(value.shape):
                raise DataError(f"armor-graph resume state has {key} of shape {tuple(value.shape)}, this model "
                                f"needs {tuple(mine[key].shape) if key in mine else 'none'}: another split or config")
        self._params.load_state_dict(state["params"])
        self._optimizer.load_state_dict(state["optimizer"])
        self._stale = True

    def snapshot(self) -> dict[str, Any]:
        self._refresh()
        return copy.deepcopy({"user_final": self.user_final, "item_final": self.item_final,
                              "item_content": self.item_content, "fusion_state": self.fusion_state})

    def restore(self, snapshot: dict[str, Any]) -> None:
        state = copy.deepcopy(snapshot)
        self.user_final, self.item_final = state["user_final"], state["item_final"]
        self.item_content, self.fusion_state = state["item_content"], state["fusion_state"]
        self._stale = False

    def end(self) -> None:
        self._refresh()
        self._params = self._optimizer = None
        self._adjacency = self._item_graph = self._inputs = self._profiles = None

    def _final_tensors(self) -> tuple[Tensor, Tensor, Tensor | None]:
        """(users (U, d) unit, items (I, d) unit, f (I, d) or None) of the current weights, dropout off;
        a new movie's vector is its unit content vector."""
        self._params.eval()
        with torch.no_grad():
            users, items, content = self._forward()
            if self.config.content and content is None:
                content = self._content()  # (I, d)
            if content is not None and self.config.new_item_vector == "content" and self.cold.any():
                rows = torch.as_tensor(np.flatnonzero(self.cold), device=self._device)
                items = items.index_copy(0, rows, _unit(content.index_select(0, rows)))
        return _unit(users), items, content

    def _refresh(self) -> None:
        """Host copies of the final vectors, once per change."""
        if not self._stale or self._params is None:
            return
        users, items, content = self._final_tensors()
        self.user_final = users.cpu().numpy().astype(np.float32)
        self.item_final = items.cpu().numpy().astype(np.float32)
        self.item_content = None if content is None else content.cpu().numpy().astype(np.float32)
        fusion = self._params.fusion
        self.fusion_state = {} if fusion is None else {k: v.detach().cpu().numpy().copy()
                                                        for k, v in fusion.state_dict().items()}
        self._stale = False

    # -- scoring and persistence -------------------------------------------------------------
    def score(self, users: np.ndarray, history: sp.csr_matrix) -> np.ndarray:
        """Cosine of the user vector with every item's vector; a user unknown at fit time is their
        profile alone."""
        self._refresh()
        if self.user_final is None or self.item_final is None:
            raise ArmorError("armor-graph score called before fit (or load)")
        n_items = self.item_final.shape[0]
        if history.shape[1] != n_items:
            raise DataError(f"history has {history.shape[1]} items but the model was fit on {n_items}; "
                            "fit expects a users x items matrix")
        users = np.asarray(users, dtype=np.int64)
        known = (users >= 0) & (users < self.user_final.shape[0])
        learned = np.zeros((users.size, self.user_final.shape[1]), dtype=np.float32)  # (B, d)
        learned[known] = self.user_final[users[known]]
        profile = sp.csr_matrix(history, dtype=np.float32)
        profile.data[:] = 1.0
        mean = np.asarray(profile @ self.item_final) / np.maximum(np.diff(profile.indptr), 1)[:, None]  # (B, d)
        z = self._user_vectors(torch.from_numpy(learned), torch.from_numpy(mean.astype(np.float32))).numpy()
        strangers = ~known
        z[strangers] = mean[strangers] / np.maximum(np.linalg.norm(mean[strangers], axis=1, keepdims=True), 1e-12)
        return (z @ self.item_final.T).astype(np.float32)  # (B, I)

    def item_embeddings(self) -> np.ndarray:
        """(I, d) the unit vectors ``score`` ranks items by. A user the model never saw is their
        profile alone, so their scores are the cosines of the mean of their liked items' vectors:
        what the FAISS pyfunc serves for a history. A known user also has their learned vector."""
        self._refresh()
        if self.item_final is None:
            raise ArmorError("armor-graph item_embeddings called before fit (or load)")
        return self.item_final

    def params(self) -> dict[str, Any]:
        return {"config": dataclasses.asdict(self.config), "dims": self.dims, "device": self.device,
                "num_threads": self.num_threads}

    def arrays(self) -> dict[str, np.ndarray]:
        self._refresh()
        if self.user_final is None or self.item_final is None:
            return {}
        out = {"user_final": self.user_final, "item_final": self.item_final}
        if self.cold is not None:
            out["cold"] = self.cold
        if self.item_content is not None:
            out["item_content"] = self.item_content
        out.update({_STATE_PREFIX + k: v for k, v in self.fusion_state.items()})
        for m, (mean, axes) in self.components.items():
            out[f"pca.{m}.mean"], out[f"pca.{m}.axes"] = mean, axes
        return out

    def load_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        self.user_final = np.asarray(arrays["user_final"], dtype=np.float32)
        self.item_final = np.asarray(arrays["item_final"], dtype=np.float32)
        self.cold = None if "cold" not in arrays else np.asarray(arrays["cold"], dtype=bool)
        self.item_content = None if "item_content" not in arrays else np.asarray(arrays["item_content"], np.float32)
        self.fusion_state = {k[len(_STATE_PREFIX):]: np.asarray(v) for k, v in arrays.items()
                             if k.startswith(_STATE_PREFIX)}
        self.components = {k.split(".")[1]: (np.asarray(arrays[k]), np.asarray(arrays[k[:-4] + "axes"]))
                           for k in arrays if k.startswith("pca.") and k.endswith(".mean")}
        self._stale = False
