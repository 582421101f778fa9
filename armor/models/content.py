"""Content-based recommenders: items are embedded from their text / poster / thumbnail features.

``FusionRecommender`` ("fused", "fused-paper") trains a fusion module (``armor.models.fusion``) so
that items co-liked by a user are close in cosine. ``ProjectedFeatureModel`` ("text-projected",
"image-projected") trains a 2-layer MLP over one modality with the same objective and the same
trainer, and ``FeatureModel`` ("text", "image") ranks by one modality's raw, standardised features.
Users are the mean of their liked items and scores are cosines (``EmbeddingRecommender``).

Features are ``{modality: (n_items, d) float32}`` aligned with the catalogue columns of the
split (``SplitData.item_ids``), with ``present`` ``{modality: (n_items,) bool}``; without it a
modality counts as absent for rows that are all zeros (how the feature store fills gaps).
A saved model keeps its weights and its item embeddings, not the features: loading reproduces
``item_embeddings()`` exactly, and fitting again needs a model built with features.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor, nn

from armor.config import FusionConfig, TrainConfig, from_dict
from armor.errors import ArmorError, ConfigError, DataError
from armor.models.base import EmbeddingRecommender, TrainableRecommender, l2_normalize
from armor.models.fusion import MODALITIES, Standardize, build_fusion, feature_stats
from armor.training.loop import train_epoch
from armor.training.losses import make_pair_step
from armor.training.schedule import Schedule
from armor.training.triplets import LikedItems, PairSampler

if TYPE_CHECKING:
    from armor.training.trainer import Streams

log = logging.getLogger(__name__)

IMAGE_MODALITIES = ("poster", "thumbnail")
FEATURE_MODALITIES = (*MODALITIES, "image")  # "image": the mean of poster and thumbnail
_ENCODE_BATCH = 4096
_STATE_PREFIX = "state."


def _needed(modality: str) -> tuple[str, ...]:
    if modality not in FEATURE_MODALITIES:
        raise ConfigError(f"modality must be one of {', '.join(FEATURE_MODALITIES)}, got {modality!r}")
    return IMAGE_MODALITIES if modality == "image" else (modality,)


def _check_features(features: Mapping[str, np.ndarray], present: Mapping[str, np.ndarray] | None,
                    needed: tuple[str, ...]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Validated float32 features and bool presence for ``needed`` modalities, all with one row count."""
    missing = [m for m in needed if m not in features]
    if missing:
        raise DataError(f"no features for modality {missing[0]!r}; got {', '.join(features) or 'none'}")
    out, mask = {}, {}
    n_items = None
    for m in needed:
        # A private, writable copy only when needed: torch refuses to wrap read-only arrays.
        x = np.require(np.asarray(features[m], dtype=np.float32), requirements=["C", "W"])
        if x.ndim != 2:
            raise DataError(f"features[{m!r}] must be (n_items, d), got shape {x.shape}")
        if n_items is not None and x.shape[0] != n_items:
            raise DataError(f"features[{m!r}] has {x.shape[0]} rows but {needed[0]!r} has {n_items}; "
                            "all modalities must be aligned with the same catalogue")
        n_items = x.shape[0]
        if not np.isfinite(x).all():
            bad = int(np.flatnonzero(~np.isfinite(x).all(axis=1))[0])
            raise DataError(f"features[{m!r}] row {bad} holds NaN or infinite values")
        if present is not None and m in present:
            p = np.asarray(present[m], dtype=bool)
            if p.shape != (x.shape[0],):
                raise DataError(f"present[{m!r}] must have shape ({x.shape[0]},), got {p.shape}")
        else:
            p = np.abs(x).sum(axis=1) > 0
        out[m], mask[m] = x, p
    return out, mask


def _config(cls: type, value: Any, default: Any) -> Any:
    if value is None:
        return default
    if isinstance(value, cls):
        return value
    if isinstance(value, Mapping):
        return from_dict(cls, value, where=cls.__name__)
    raise ConfigError(f"expected a {cls.__name__} or a mapping, got {type(value).__name__}")


class ProjectionEncoder(nn.Module):
    """Standardise one modality (or the mean of poster and thumbnail), then Linear-ReLU-Linear.

    Same call signature as the fusion modules; the (B, 3) weights say which inputs were used.
    """

    def __init__(self, modality: str, dims: Mapping[str, int], hidden: int, out_dim: int, dropout: float = 0.0,
                 stats: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None):
        super().__init__()
        self.inputs = _needed(modality)
        sizes = {int(dims[m]) for m in self.inputs}
        if len(sizes) != 1:
            raise ConfigError(f"modality 'image' averages poster and thumbnail, which need one dimension; "
                              f"got {', '.join(f'{m} {dims[m]}' for m in self.inputs)}")
        stats = stats or {}
        d_in = sizes.pop()
        self.norm = nn.ModuleDict({m: Standardize(d_in, *stats.get(m, (None, None))) for m in self.inputs})
        self.mlp = nn.Sequential(nn.Linear(d_in, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, out_dim))

    def forward(self, features: Mapping[str, Tensor],
                present: Mapping[str, Tensor] | None = None) -> tuple[Tensor, Tensor]:
        batch = features[self.inputs[0]].shape[0]
        device = features[self.inputs[0]].device
        used = torch.stack([present[m].to(torch.float32) if present is not None and m in present
                            else torch.ones(batch, device=device) for m in self.inputs], dim=1)  # (B, k)
        x = sum(self.norm[m](features[m], used[:, j] > 0) for j, m in enumerate(self.inputs))  # (B, d_in)
        x = x / used.sum(dim=1, keepdim=True).clamp(min=1.0)  # mean over the present inputs
        z = self.mlp(x)  # (B, out_dim)
        weights = used.new_zeros(batch, len(MODALITIES))  # (B, 3)
        share = used / used.sum(dim=1, keepdim=True).clamp(min=1.0)
        for j, m in enumerate(self.inputs):
            weights[:, MODALITIES.index(m)] = share[:, j]
        return z, weights


class _EncoderModel(TrainableRecommender, EmbeddingRecommender):
    """An nn.Module item encoder over catalogue features, trained on co-liked pairs.

    Each epoch: ``steps_per_epoch`` batches from ``PairSampler``, in-batch mining and the
    configured loss (``armor.training.losses``); the ``Trainer`` validates and keeps the best epoch.
    In a distributed run every rank samples its slice of each global batch and mines negatives
    from the gathered batch. Subclasses set ``self.module`` and describe themselves in ``params``.
    """

    module: nn.Module
    train_config: TrainConfig
    dims: dict[str, int]

    def _setup(self, train_config: TrainConfig, features: Mapping[str, np.ndarray] | None,
               present: Mapping[str, np.ndarray] | None, needed: tuple[str, ...], dims: Mapping[str, int] | None,
               device: str) -> dict | None:
        self.train_config = train_config
        self.device = torch.device(device)
        self._embeddings: np.ndarray | None = None
        self._weights: np.ndarray | None = None
        self.features: dict[str, Tensor] | None = None
        self.present: dict[str, Tensor] | None = None
        if features is None:
            if dims is None:
                raise ConfigError(f"{type(self).__name__} needs either features or dims")
            missing = [m for m in needed if m not in dims]
            if missing:
                raise ConfigError(f"dims lack modality {missing[0]!r}")
            self.dims = {m: int(dims[m]) for m in needed}
            self.n_items: int | None = None
            return None
        arrays, mask = _check_features(features, present, needed)
        self.dims = {m: int(arrays[m].shape[1]) for m in needed}
        self.n_items = int(arrays[needed[0]].shape[0])
        self.features = {m: torch.from_numpy(arrays[m]).to(self.device) for m in needed}
        self.present = {m: torch.from_numpy(mask[m]).to(self.device) for m in needed}
        return feature_stats(arrays, mask)

    def _build(self, make: Any, seed: int) -> nn.Module:
        # A fixed init per seed, without touching the caller's global RNG. The module is built
        # on the CPU and then moved, so the init is the same on every device and only the CPU RNG
        # is drawn from (forking a CUDA RNG would initialise CUDA for nothing).
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(seed)  # the CPU RNG only: CUDA's is left alone
            module = make()
        return module.to(self.device)

    def encode(self, items: Tensor, module: nn.Module | None = None) -> tuple[Tensor, Tensor]:
        """(z (k, out_dim), modality weights (k, 3)) of catalogue items ``items`` (k,).

        ``module`` runs the forward instead of ``self.module``: a DistributedDataParallel wrapper
        of it during distributed training.
        """
        if self.features is None or self.present is None:
            raise ArmorError(f"{type(self).__name__} was loaded without features; build it with features "
                             "to train it or to re-encode items")
        items = items.to(self.device)
        batch = {m: x[items] for m, x in self.features.items()}
        present = {m: p[items] for m, p in self.present.items()}
        return (module or self.module)(batch, present)

    def _invalidate(self) -> None:
        self._embeddings, self._weights = None, None

    def _encode_tensors(self) -> tuple[Tensor, Tensor]:
        """(z (I, out_dim), weights (I, 3)) float32 of every catalogue item, on the model's device."""
        if self.n_items is None:
            raise ArmorError(f"{type(self).__name__} has neither features nor saved item embeddings")
        was_training = self.module.training
        self.module.eval()
        zs, ws = [], []
        with torch.no_grad():
            for start in range(0, self.n_items, _ENCODE_BATCH):
                items = torch.arange(start, min(start + _ENCODE_BATCH, self.n_items), device=self.device)
                z, w = self.encode(items)
                zs.append(z.float())
                ws.append(w.float())
        self.module.train(was_training)
        return torch.cat(zs), torch.cat(ws)

    def _encode_all(self) -> None:
        z_t, w_t = self._encode_tensors()
        z, w = z_t.cpu().numpy(), w_t.cpu().numpy()  # one copy to the host: (I, out_dim), (I, 3)
        # Training only shapes directions (cosine), so norms are arbitrary; unnormalised, a few
        # long vectors would dominate every user's mean.
        self._embeddings = np.ascontiguousarray(l2_normalize(z), dtype=np.float32)
        self._weights = np.ascontiguousarray(w, dtype=np.float32)  # (I, 3)

    def item_embeddings(self) -> np.ndarray:
        if self._embeddings is None:
            self._encode_all()
        assert self._embeddings is not None
        return self._embeddings

    def attention_weights(self) -> np.ndarray:
        """(n_items, 3) weight of (text, poster, thumbnail) in each item's embedding."""
        if self._weights is None:
            self._encode_all()
        assert self._weights is not None
        return self._weights

    # -- training, driven by armor.training.trainer.Trainer ----------------------------------
    def schedule(self) -> Schedule:
        config = self.train_config
        return Schedule(epochs=config.epochs, patience=config.patience, seed=config.seed)

    def begin(self, train: sp.csr_matrix, streams: Streams, *, rank: int = 0, world_size: int = 1) -> None:
        if self.features is None:
            raise ArmorError(f"{type(self).__name__} was loaded without features; build it with features to fit")
        if train.shape[1] != self.n_items:
            raise DataError(f"train matrix has {train.shape[1]} item columns but the features have "
                            f"{self.n_items} rows; align the features with SplitData.item_ids")
        config = self.train_config
        self._sampler = PairSampler(train, config.batch_size, rank=rank, world_size=world_size)
        self._liked = LikedItems(train)
        self._steps = config.steps_per_epoch or self._sampler.steps_per_epoch()
        self._optimizer = torch.optim.AdamW(self.module.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        self._forward: nn.Module = self.module
        self._world_size = world_size

    def distribute(self, wrapper: Callable[[nn.Module], nn.Module]) -> None:
        self._forward = wrapper(self.module)

    def steps_per_epoch(self) -> int | None:
        return getattr(self, "_steps", None)

    def _pair_step(self, streams: Streams) -> Callable[[dict[str, Tensor]], Tensor]:
        """The training step: a ``PairSampler`` batch -> its pair loss (``make_pair_step``)."""
        return make_pair_step(lambda items: self.encode(items, self._forward)[0], self._liked, self.train_config,
                              streams.torch)

    def train_epoch(self, epoch: int, streams: Streams) -> dict[str, float]:
        step = self._pair_step(streams)
        self._forward.train()
        stats = train_epoch(step, self._sampler.batches(streams.epoch_rng(epoch), self._steps), self._optimizer,
                            grad_scale=float(self._world_size), on_step=self.steps_done)
        self._forward.eval()
        self._invalidate()
        return {"loss": stats["loss"], "pairs_per_s": stats["pairs_per_s"] * self._world_size}

    def state_dict(self) -> dict[str, Any]:
        return {"module": copy.deepcopy(self.module.state_dict()),
                "optimizer": copy.deepcopy(self._optimizer.state_dict())}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state["module"])
        self._optimizer.load_state_dict(state["optimizer"])
        self._invalidate()

    def snapshot(self) -> dict[str, Tensor]:
        return copy.deepcopy(self.module.state_dict())

    def restore(self, snapshot: dict[str, Tensor]) -> None:
        self.module.load_state_dict(snapshot)
        self._invalidate()

    def end(self) -> None:
        self.module.eval()
        self._invalidate()

    # -- persistence ---------------------------------------------------------------------------
    def arrays(self) -> dict[str, np.ndarray]:
        out = {"item_embeddings": self.item_embeddings(), "attention_weights": self.attention_weights()}
        for name, value in self.module.state_dict().items():
            out[_STATE_PREFIX + name] = value.detach().cpu().numpy()
        return out

    def load_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        state = {k[len(_STATE_PREFIX):]: torch.from_numpy(np.array(v)) for k, v in arrays.items()
                 if k.startswith(_STATE_PREFIX)}
        self.module.load_state_dict(state)
        self.module.eval()
        self._embeddings = np.ascontiguousarray(arrays["item_embeddings"], dtype=np.float32)
        self._weights = np.ascontiguousarray(arrays["attention_weights"], dtype=np.float32)
        self.n_items = int(self._embeddings.shape[0])


class FusionRecommender(_EncoderModel):
    """Items embedded by a fusion of text, poster and thumbnail features ("paper" or "full")."""

    def __init__(self, fusion_config: FusionConfig | Mapping[str, Any] | None = None,
                 train_config: TrainConfig | Mapping[str, Any] | None = None,
                 features: Mapping[str, np.ndarray] | None = None, present: Mapping[str, np.ndarray] | None = None,
                 *, dims: Mapping[str, int] | None = None, device: str = "cpu"):
        self.fusion_config = _config(FusionConfig, fusion_config, FusionConfig())
        stats = self._setup(_config(TrainConfig, train_config, TrainConfig()), features, present,
                            tuple(self.fusion_config.modalities), dims, device)
        self.module = self._build(lambda: build_fusion(self.fusion_config, self.dims, stats), self.train_config.seed)

    def params(self) -> dict[str, Any]:
        return {"fusion_config": dataclasses.asdict(self.fusion_config),
                "train_config": dataclasses.asdict(self.train_config), "dims": self.dims}

    @property
    def name(self) -> str:
        return "fused" if self.fusion_config.variant == "full" else "fused-paper"


class ProjectedFeatureModel(_EncoderModel):
    """One modality through a 2-layer MLP trained like the fused model (the unimodal baselines).

    Sizes come from ``fusion_config``: ``dim`` is the hidden width, ``out_dim`` the retrieval space,
    ``dropout`` between the layers, so a tuned fused model and its baselines share a budget.
    """

    def __init__(self, modality: str, fusion_config: FusionConfig | Mapping[str, Any] | None = None,
                 train_config: TrainConfig | Mapping[str, Any] | None = None,
                 features: Mapping[str, np.ndarray] | None = None, present: Mapping[str, np.ndarray] | None = None,
                 *, dims: Mapping[str, int] | None = None, device: str = "cpu"):
        self.modality = modality
        needed = _needed(modality)
        self.fusion_config = _config(FusionConfig, fusion_config, FusionConfig())
        stats = self._setup(_config(TrainConfig, train_config, TrainConfig()), features, present, needed, dims,
                            device)
        cfg = self.fusion_config
        self.module = self._build(lambda: ProjectionEncoder(modality, self.dims, cfg.dim, cfg.out_dim, cfg.dropout,
                                                            stats), self.train_config.seed)

    def params(self) -> dict[str, Any]:
        return {"modality": self.modality, "fusion_config": dataclasses.asdict(self.fusion_config),
                "train_config": dataclasses.asdict(self.train_config), "dims": self.dims}

    @property
    def name(self) -> str:
        return f"{self.modality}-projected"


class FeatureModel(EmbeddingRecommender):
    """One modality's features as they are, centred and scaled (no training): a content baseline.

    "image" is the mean of the standardised poster and thumbnail features (just one where the
    other is absent). Centring matters for cosine: raw CNN features are all positive, so
    uncentred every pair of movies looks alike. An item lacking the modality is a zero vector.
    """

    def __init__(self, modality: str, features: Mapping[str, np.ndarray] | None = None,
                 present: Mapping[str, np.ndarray] | None = None, standardize: bool = True):
        self.modality = modality
        self.standardize = bool(standardize)
        needed = _needed(modality)
        self._embeddings: np.ndarray | None = None
        if features is None:
            return
        arrays, mask = _check_features(features, present, needed)
        stats = feature_stats(arrays, mask) if self.standardize else {}
        total = np.zeros_like(arrays[needed[0]], dtype=np.float32)
        count = np.zeros((total.shape[0], 1), dtype=np.float32)
        for m in needed:
            x = arrays[m]
            if m in stats:
                mean, std = stats[m]
                x = (x - mean) / std
            total += np.where(mask[m][:, None], x, 0.0)
            count += mask[m][:, None]
        self._embeddings = (total / np.maximum(count, 1.0)).astype(np.float32)

    @property
    def name(self) -> str:
        return self.modality

    def fit(self, train: sp.csr_matrix, valid: sp.csr_matrix | None = None) -> FeatureModel:
        """Nothing to learn; checks that the features cover the catalogue."""
        embeddings = self.item_embeddings()
        if train.shape[1] != embeddings.shape[0]:
            raise DataError(f"train matrix has {train.shape[1]} item columns but the {self.modality} features have "
                            f"{embeddings.shape[0]} rows; align the features with SplitData.item_ids")
        return self

    def item_embeddings(self) -> np.ndarray:
        if self._embeddings is None:
            raise ArmorError(f"content-raw model for {self.modality!r} has no features; build it with features")
        return self._embeddings

    def params(self) -> dict[str, Any]:
        return {"modality": self.modality, "standardize": self.standardize}

    def arrays(self) -> dict[str, np.ndarray]:
        return {"item_embeddings": self.item_embeddings()}

    def load_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        self._embeddings = np.ascontiguousarray(arrays["item_embeddings"], dtype=np.float32)
