"""The settings of the hybrid baselines (VBPR, FREEDOM, the cold-start mappings), kept apart from their
torch and faiss code: the registry imports every config class to type the CLI's flags and a job's
data, and `armor --help` must not load the libraries a model needs only to train."""

from __future__ import annotations

import dataclasses
from typing import Literal

from armor.config import setting
from armor.errors import ConfigError

Source = Literal["als", "lightgcn"]
SOURCES = ("als", "lightgcn")


def require(config: object, section: str, checks: tuple[tuple[str, bool], ...]) -> None:
    """ConfigError naming ``section.field`` and its value for the first check that fails."""
    for name, ok in checks:
        if not ok:
            raise ConfigError(f"{section}.{name}: out of range, got {getattr(config, name)!r}")


@dataclasses.dataclass(frozen=True)
class VBPRConfig:
    """VBPR (``armor.models.vbpr``); lr and both regularisers are searched on validation."""

    dim: int = setting(64, "ID factors gamma_u, gamma_i (the paper's K)")
    content_dim: int = setting(64, "content factors theta_u and rows of E (the paper's K')")
    lr: float = setting(5e-3, "Adam learning rate")
    reg: float = setting(1e-4, "L2 on the batch's gamma_u, theta_u, gamma_i, beta_i (the paper's lambda_Theta)")
    content_reg: float = setting(1e-4, "L2 on E and beta' each step (the paper's lambda_E)")
    batch_size: int = setting(2048, "(user, positive, negative) triples per step")
    epochs: int = setting(300, "upper bound; early stopping on validation picks the epoch")
    patience: int = setting(10, "evaluations without a better validation NDCG@10 before stopping")
    seed: int = setting(0, "seed of initialisation and sampling")

    def __post_init__(self) -> None:
        require(self, "vbpr", (("dim", self.dim >= 1), ("content_dim", self.content_dim >= 1), ("lr", self.lr > 0),
                               ("reg", self.reg >= 0), ("content_reg", self.content_reg >= 0),
                               ("batch_size", self.batch_size >= 1), ("epochs", self.epochs >= 1),
                               ("patience", self.patience >= 1)))


@dataclasses.dataclass(frozen=True)
class FREEDOMConfig:
    """FREEDOM (``armor.models.freedom``); MMRec's defaults where it has them. lr, dropout and
    reg_weight are searched on validation (MMRec searches dropout and reg_weight)."""

    dim: int = setting(64, "ID embedding and projected feature dimension (MMRec: 64 and 64)")
    layers: int = setting(2, "LightGCN layers over the user-item graph (MMRec's n_ui_layers)")
    item_layers: int = setting(1, "products with the frozen item-item graph (MMRec's n_mm_layers)")
    knn_k: int = setting(10, "neighbours per item and modality in the item-item graph")
    image_weight: float = setting(0.1, "share of the images (poster and thumbnail, equally) in the item graph; "
                                       "text has the rest (MMRec's mm_image_weight)")
    dropout: float = setting(0.8, "share of user-item edges pruned before each epoch, degree-sensitively")
    reg_weight: float = setting(1e-4, "weight of the modality alignment BPR terms")
    lr: float = setting(5e-3, "Adam learning rate (MMRec: 1e-3 over up to 1,000 epochs)")
    batch_size: int = setting(2048, "(user, positive, negative) triples per step")
    epochs: int = setting(300, "upper bound; early stopping on validation picks the epoch")
    patience: int = setting(10, "evaluations without a better validation NDCG@10 before stopping")
    seed: int = setting(0, "seed of initialisation, pruning and sampling")

    def __post_init__(self) -> None:
        require(self, "freedom", (
            ("dim", self.dim >= 1), ("layers", self.layers >= 0), ("item_layers", self.item_layers >= 0),
            ("knn_k", self.knn_k >= 1), ("image_weight", 0.0 <= self.image_weight <= 1.0),
            ("dropout", 0.0 <= self.dropout < 1.0), ("reg_weight", self.reg_weight >= 0), ("lr", self.lr > 0),
            ("batch_size", self.batch_size >= 1), ("epochs", self.epochs >= 1), ("patience", self.patience >= 1)))


@dataclasses.dataclass(frozen=True)
class KNNMapConfig:
    """The kNN mapping (``armor.models.cold_mapping``); the collaborative model reads its own section."""

    source: Source = setting("als", "collaborative model whose item vectors new movies get: als or lightgcn")
    k: int = setting(20, "content-nearest movies with ratings a new movie's vector is the weighted mean of")

    def __post_init__(self) -> None:
        require(self, "knn_map", (("source", self.source in SOURCES), ("k", self.k >= 1)))


@dataclasses.dataclass(frozen=True)
class LinearMapConfig:
    """The linear mapping (``armor.models.cold_mapping``); the collaborative model reads its own section."""

    source: Source = setting("als", "collaborative model whose item vectors new movies get: als or lightgcn")
    l2: float = setting(10.0, "ridge penalty of the content-to-item-vector regression")

    def __post_init__(self) -> None:
        require(self, "linear_map", (("source", self.source in SOURCES), ("l2", self.l2 > 0)))
