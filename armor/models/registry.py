"""The one table of models: what `armor train --model` accepts, how each is built and labelled.

Every other place that needs a model's name, family, label or config reads this table: the CLI's
choices and flags, ``build_model`` (for `armor train`, Ray workers and Tune trials),
``load_recommender`` (a saved model names its entry), the report's rows, the demo's list and the
shared contract test. Adding a model is one ``ModelSpec`` here plus its module.

Hyperparameters live in config sections (frozen dataclasses, one per concern: "fusion", "train",
"bpr", ...); a spec names the sections it reads. ``ModelSettings`` carries one instance per section
(defaults where none is given) and is what a training job holds.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from armor.config import ArmorGraphConfig, BPRConfig, FusionConfig, LightGCNConfig, TrainConfig, from_dict
from armor.errors import ConfigError, DataError
from armor.models.base import Recommender
from armor.training.search import Space, choice, log_uniform, uniform

FAMILIES = ("content", "interaction", "hybrid", "reference")


@dataclasses.dataclass(frozen=True)
class BuildContext:
    """What a factory may use: the settings, the catalogue's features (aligned with its items), a device."""

    settings: ModelSettings
    features: Mapping[str, np.ndarray] | None = None
    present: Mapping[str, np.ndarray] | None = None
    device: str = "cpu"


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    name: str
    family: str  # "content": item features; "interaction": ratings; "hybrid": both; "reference"
    label: str  # its row in Table 1
    needs_features: bool
    build: Callable[[BuildContext], Recommender]
    cls: str  # "module:Class", what a saved model of this name is loaded as
    configs: Mapping[str, type] = dataclasses.field(default_factory=dict)  # section -> config class
    paper_row: str | None = None  # its row in the paper's Table 1, if any
    data_parallel: bool = False  # trains with several Ray Train workers
    # Named search spaces over "section.field" settings (``armor.training.search``): "default" is
    # what `armor train --trials N` and the benchmark search, with the same budget for every model.
    spaces: Mapping[str, Space] = dataclasses.field(default_factory=dict)
    # The sections a point of its space leaves unread (a mapping reads only its chosen source's), so
    # that their settings are never reported as the choice or flagged at the edge of their range.
    unread: Callable[[Mapping[str, Any]], frozenset[str]] = lambda point: frozenset()

    def read_settings(self, point: Mapping[str, Any]) -> dict[str, Any]:
        """The settings of ``point`` the model reads."""
        skipped = self.unread(point)
        return {key: value for key, value in point.items() if key.split(".", 1)[0] not in skipped}

    def space(self, which: str = "default") -> Space:
        if which not in self.spaces:
            known = ", ".join(self.spaces) or "none: it has no setting to tune"
            raise ConfigError(f"--space {which}: {self.name} has no such search space (known: {known})")
        return self.spaces[which]

    @property
    def tunable(self) -> bool:
        return bool(self.spaces)


def _fused(variant: str) -> Callable[[BuildContext], Recommender]:
    def build(ctx: BuildContext) -> Recommender:
        from armor.models.content import FusionRecommender

        fusion = dataclasses.replace(ctx.settings["fusion"], variant=variant)
        return FusionRecommender(fusion, ctx.settings["train"], ctx.features, ctx.present, device=ctx.device)

    return build


def _projected(modality: str) -> Callable[[BuildContext], Recommender]:
    def build(ctx: BuildContext) -> Recommender:
        from armor.models.content import ProjectedFeatureModel

        return ProjectedFeatureModel(modality, ctx.settings["fusion"], ctx.settings["train"], ctx.features,
                                     ctx.present, device=ctx.device)

    return build


def _raw(modality: str) -> Callable[[BuildContext], Recommender]:
    def build(ctx: BuildContext) -> Recommender:
        from armor.models.content import FeatureModel

        return FeatureModel(modality, ctx.features, ctx.present)

    return build


def _itemknn(ctx: BuildContext) -> Recommender:
    from armor.models.neighbors import ItemKNN

    return ItemKNN(ctx.settings["itemknn"])


def _ease(ctx: BuildContext) -> Recommender:
    from armor.models.neighbors import EASE

    return EASE(ctx.settings["ease"])


def _als(ctx: BuildContext) -> Recommender:
    from armor.models.als import ALS

    return ALS(ctx.settings["als"])


def _armor_graph(ctx: BuildContext) -> Recommender:
    from armor.models.graph_hybrid import GraphHybrid

    return GraphHybrid(ctx.settings["armor_graph"], ctx.features, ctx.present, device=ctx.device,
                       num_threads=1 if ctx.device == "cpu" else None)


def _vbpr(ctx: BuildContext) -> Recommender:
    from armor.models.vbpr import VBPR

    return VBPR(ctx.settings["vbpr"], ctx.features, ctx.present, device=ctx.device,
                num_threads=1 if ctx.device == "cpu" else None)


def _freedom(ctx: BuildContext) -> Recommender:
    from armor.models.freedom import FREEDOM

    return FREEDOM(ctx.settings["freedom"], ctx.features, ctx.present, device=ctx.device,
                   num_threads=1 if ctx.device == "cpu" else None)


def _mapping(cls: str, section: str) -> Callable[[BuildContext], Recommender]:
    def build(ctx: BuildContext) -> Recommender:
        from armor.models import cold_mapping

        return getattr(cold_mapping, cls)(ctx.settings[section], ctx.features, ctx.present, als=ctx.settings["als"],
                                          lightgcn=ctx.settings["lightgcn"], device=ctx.device,
                                          num_threads=1 if ctx.device == "cpu" else None)

    return build


def _unread_source(section: str) -> Callable[[Mapping[str, Any]], frozenset[str]]:
    """A mapping trains only the collaborative source its point names: the other's settings are unread."""
    def unread(point: Mapping[str, Any]) -> frozenset[str]:
        source = point.get(f"{section}.source")
        return frozenset({"als", "lightgcn"} - {source}) if source else frozenset()

    return unread


def _popularity(ctx: BuildContext) -> Recommender:
    from armor.models.baselines import Popularity

    return Popularity()


def _new_first(ctx: BuildContext) -> Recommender:
    from armor.models.baselines import NewFirst

    return NewFirst()


def _random(ctx: BuildContext) -> Recommender:
    from armor.models.baselines import RandomRanker

    return RandomRanker(seed=ctx.settings["train"].seed)


def _bpr(ctx: BuildContext) -> Recommender:
    from armor.models.bpr import BPR

    return BPR(ctx.settings["bpr"])


def _lightgcn(ctx: BuildContext) -> Recommender:
    from armor.models.lightgcn import LightGCN

    # One thread on CPU: two OpenMP threads with the other core busy ran an epoch ~6x slower.
    return LightGCN(ctx.settings["lightgcn"], device=ctx.device, num_threads=1 if ctx.device == "cpu" else None)


_CONTENT = {"fusion": FusionConfig, "train": TrainConfig}


def _config(module: str, name: str) -> type:
    """A config class that lives beside its model (imported for the flags and job data it types)."""
    return getattr(importlib.import_module(module), name)
# Search spaces (``armor.training.search``). Epoch counts are not searched: early stopping on
# validation picks them under a cap. Ranges are wide enough that a chosen value at an end is rare;
# the report flags one that is.
_CONTENT_SPACE: Space = {"train.lr": log_uniform(2e-4, 5e-3), "train.margin": uniform(0.05, 0.6),
                         "fusion.out_dim": choice(64, 128, 256)}
_SPACES: dict[str, dict[str, Space]] = {
    "content": {"default": _CONTENT_SPACE},
    "bpr": {"default": {"bpr.learning_rate": log_uniform(1e-3, 1e-1), "bpr.regularization": log_uniform(1e-5, 1e-1),
                        "bpr.factors": choice(32, 64, 128)}},
    "lightgcn": {"default": {"lightgcn.lr": log_uniform(1e-3, 5e-2), "lightgcn.reg": log_uniform(1e-6, 1e-1),
                             "lightgcn.layers": choice(1, 2, 3)}},
    "itemknn": {"default": {"itemknn.k": log_uniform(5, 1500, integer=True)}},
    "als": {"default": {"als.factors": choice(32, 64, 128), "als.regularization": log_uniform(1e-3, 10.0),
                        "als.alpha": log_uniform(0.3, 100.0)}},
    "ease": {"default": {"ease.l2": log_uniform(5.0, 20000.0)}},
    "vbpr": {"default": {"vbpr.lr": log_uniform(1e-3, 5e-2), "vbpr.reg": log_uniform(1e-6, 1e-1),
                         "vbpr.content_reg": log_uniform(1e-7, 1e-1)}},
    # MMRec searches FREEDOM's dropout (0.8, 0.9) and reg_weight (0, 1e-5 .. 1e-3); the lr as every graph model's.
    "freedom": {"default": {"freedom.lr": log_uniform(1e-3, 5e-2), "freedom.dropout": uniform(0.1, 0.95),
                            "freedom.reg_weight": log_uniform(1e-6, 1e-1)}},
    # "cold-path": the two settings that shape only the content path (see ArmorGraphConfig), searched
    # on the item cold-start split's validation movies with --armor-graph-new-item-vector content;
    # "default" searches them with the rest.
    "armor-graph": {"default": {"armor_graph.lr": log_uniform(1e-3, 5e-2), "armor_graph.reg": log_uniform(1e-7, 1e-2),
                                "armor_graph.temperature": uniform(0.05, 0.6), "armor_graph.layers": choice(1, 2, 3),
                                "armor_graph.align_temperature": log_uniform(0.1, 10.0),
                                "armor_graph.fusion_dropout": uniform(0.0, 0.6),
                                "armor_graph.new_item_vector": choice("neighbours", "content")},
                    "cold-path": {"armor_graph.align_temperature": log_uniform(0.05, 10.0),
                                  "armor_graph.fusion_dropout": uniform(0.0, 0.6)}},
}
# The mappings search their collaborative source with that source's own settings (the als and lightgcn
# entries' spaces; a trial reads only its source's) and their one setting of their own: one space, one budget.
_SPACES["knn-map"] = {"default": {"knn_map.source": choice("als", "lightgcn"),
                                  "knn_map.k": log_uniform(2, 200, integer=True),
                                  **_SPACES["als"]["default"], **_SPACES["lightgcn"]["default"]}}
_SPACES["linear-map"] = {"default": {"linear_map.source": choice("als", "lightgcn"),
                                     "linear_map.l2": log_uniform(1e-3, 1e3),
                                     **_SPACES["als"]["default"], **_SPACES["lightgcn"]["default"]}}


MODELS: dict[str, ModelSpec] = {spec.name: spec for spec in (
    ModelSpec("text", "content", "Text-only (raw features)", True, _raw("text"),
              "armor.models.content:FeatureModel", paper_row="text"),
    ModelSpec("text-projected", "content", "Text-only (trained projection)", True, _projected("text"),
              "armor.models.content:ProjectedFeatureModel", _CONTENT, spaces=_SPACES["content"]),
    ModelSpec("image", "content", "Image-only (raw features)", True, _raw("image"),
              "armor.models.content:FeatureModel", paper_row="image"),
    ModelSpec("image-projected", "content", "Image-only (trained projection)", True, _projected("image"),
              "armor.models.content:ProjectedFeatureModel", _CONTENT, spaces=_SPACES["content"]),
    ModelSpec("fused-paper", "content", "Fused, paper's attention (eqs. 4.2-4.6)", True, _fused("paper"),
              "armor.models.content:FusionRecommender", _CONTENT, paper_row="fused", data_parallel=True,
              spaces=_SPACES["content"]),
    ModelSpec("fused", "content", "Fused, full attention (ours)", True, _fused("full"),
              "armor.models.content:FusionRecommender", _CONTENT, data_parallel=True,
              spaces=_SPACES["content"]),
    ModelSpec("bpr", "interaction", "BPR", False, _bpr, "armor.models.bpr:BPR", {"bpr": BPRConfig},
              paper_row="bpr", spaces=_SPACES["bpr"]),
    ModelSpec("lightgcn", "interaction", "LightGCN", False, _lightgcn, "armor.models.lightgcn:LightGCN",
              {"lightgcn": LightGCNConfig}, paper_row="lightgcn", spaces=_SPACES["lightgcn"]),
    ModelSpec("itemknn", "interaction", "ItemKNN (cosine)", False, _itemknn, "armor.models.neighbors:ItemKNN",
              {"itemknn": _config("armor.models.neighbors", "ItemKNNConfig")}, spaces=_SPACES["itemknn"]),
    ModelSpec("als", "interaction", "ALS (implicit)", False, _als, "armor.models.als:ALS",
              {"als": _config("armor.models.als", "ALSConfig")}, spaces=_SPACES["als"]),
    ModelSpec("ease", "interaction", "EASE (Steck 2019)", False, _ease, "armor.models.neighbors:EASE",
              {"ease": _config("armor.models.neighbors", "EASEConfig")}, spaces=_SPACES["ease"]),
    ModelSpec("armor-graph", "hybrid", "ARMoR-Graph (ours: graph + content graph + aligned content)", True,
              _armor_graph, "armor.models.graph_hybrid:GraphHybrid",
              {"armor_graph": ArmorGraphConfig}, spaces=_SPACES["armor-graph"], data_parallel=True),
    ModelSpec("vbpr", "hybrid", "VBPR (He & McAuley 2016)", True, _vbpr, "armor.models.vbpr:VBPR",
              {"vbpr": _config("armor.models.hybrid_configs", "VBPRConfig")}, spaces=_SPACES["vbpr"]),
    ModelSpec("freedom", "hybrid", "FREEDOM (Zhou & Shen 2023)", True, _freedom, "armor.models.freedom:FREEDOM",
              {"freedom": _config("armor.models.hybrid_configs", "FREEDOMConfig")}, spaces=_SPACES["freedom"]),
    ModelSpec("knn-map", "hybrid", "kNN mapping (cold-start floor)", True, _mapping("KNNMapping", "knn_map"),
              "armor.models.cold_mapping:KNNMapping",
              {"knn_map": _config("armor.models.hybrid_configs", "KNNMapConfig"),
               "als": _config("armor.models.als", "ALSConfig"), "lightgcn": LightGCNConfig},
              spaces=_SPACES["knn-map"], unread=_unread_source("knn_map")),
    ModelSpec("linear-map", "hybrid", "Linear mapping (Gantner et al. 2010)", True,
              _mapping("LinearMapping", "linear_map"), "armor.models.cold_mapping:LinearMapping",
              {"linear_map": _config("armor.models.hybrid_configs", "LinearMapConfig"),
               "als": _config("armor.models.als", "ALSConfig"), "lightgcn": LightGCNConfig},
              spaces=_SPACES["linear-map"], unread=_unread_source("linear_map")),
    ModelSpec("popularity", "reference", "Popularity", False, _popularity, "armor.models.baselines:Popularity"),
    ModelSpec("random", "reference", "Random", False, _random, "armor.models.baselines:RandomRanker",
              {"train": TrainConfig}),
    ModelSpec("new-first", "reference", "New first, random order (knows only which movies lack a training positive)",
              False, _new_first, "armor.models.baselines:NewFirst"),
)}


def _sections() -> dict[str, type]:
    sections: dict[str, type] = {}
    for spec in MODELS.values():
        for section, cls in spec.configs.items():
            if sections.setdefault(section, cls) is not cls:
                raise AssertionError(f"config section {section!r} names two classes")
    return sections


SECTIONS: dict[str, type] = _sections()


def spec(name: str) -> ModelSpec:
    if name not in MODELS:
        raise ConfigError(f"--model {name!r}: choose one of {', '.join(MODELS)}")
    return MODELS[name]


def names(family: str | None = None) -> tuple[str, ...]:
    return tuple(n for n, s in MODELS.items() if family is None or s.family == family)


@dataclasses.dataclass(frozen=True)
class ModelSettings:
    """One config instance per section; a section not given is its class's defaults."""

    sections: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        for section, config in self.sections.items():
            if section not in SECTIONS:
                raise ConfigError(f"{section}: unknown settings section; known: {', '.join(SECTIONS)}")
            if not isinstance(config, SECTIONS[section]):
                raise ConfigError(f"{section}: expected a {SECTIONS[section].__name__}, got {type(config).__name__}")

    @classmethod
    def of(cls, **sections: Any) -> ModelSettings:
        return cls(dict(sections))

    def __getitem__(self, section: str) -> Any:
        if section not in SECTIONS:
            raise ConfigError(f"{section}: unknown settings section; known: {', '.join(SECTIONS)}")
        return self.sections.get(section) or SECTIONS[section]()

    def replace(self, section: str, **changes: Any) -> ModelSettings:
        """A copy with ``changes`` applied to ``section`` (validated by its dataclass)."""
        return ModelSettings({**self.sections, section: dataclasses.replace(self[section], **changes)})

    def apply(self, point: Mapping[str, Any]) -> ModelSettings:
        """A copy with a search point's "section.field" values applied (validated by the dataclasses)."""
        from armor.training.search import split_key

        out = self
        for key, value in point.items():
            section, field = split_key(key)
            out = out.replace(section, **{field: value})
        return out

    def of_sections(self, sections: Iterable[str]) -> dict[str, dict[str, Any]]:
        """The settings of ``sections`` as plain dicts (what a saved model records it was trained with)."""
        return {section: dataclasses.asdict(self[section]) for section in sections}

    def with_seed(self, seed: int) -> ModelSettings:
        """Every section that has a ``seed``, seeded with ``seed``."""
        out = dict(self.sections)
        for section, cls in SECTIONS.items():
            if "seed" in {f.name for f in dataclasses.fields(cls)}:
                out[section] = dataclasses.replace(self[section], seed=seed)
        return ModelSettings(out)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], where: str = "settings") -> ModelSettings:
        """The inverse of ``dataclasses.asdict`` (how jobs travel to Ray workers and Tune trials)."""
        sections = values.get("sections", values)
        unknown = sorted(set(sections) - set(SECTIONS))
        if unknown:
            raise ConfigError(f"{where}.{unknown[0]}: unknown settings section; known: {', '.join(SECTIONS)}")
        return cls({name: from_dict(SECTIONS[name], v, where=f"{where}.{name}") for name, v in sections.items()})


def build_model(name: str, settings: ModelSettings | None = None, features: Mapping[str, np.ndarray] | None = None,
                present: Mapping[str, np.ndarray] | None = None, device: str = "cpu") -> Recommender:
    """A fresh, unfitted model ``name`` (features aligned with the catalogue's items when it needs them).

    Settings, features and a device are all a model is built from; it learns from the training
    matrix it is fitted on. Nothing tells it what a split held out: a movie is new to a model when
    its training matrix has no positive for it."""
    entry = spec(name)
    if entry.needs_features and features is None:
        raise ConfigError(f"--model {name} ranks by item content and needs the feature store: run `armor encode`")
    model = entry.build(BuildContext(settings or ModelSettings(), features, present, device))
    assert model.name == name, f"registry entry {name!r} built a model named {model.name!r}"
    return model


def model_class(name: Any, where: str | Path | None = None) -> type[Recommender]:
    """The class that loads a saved model of registry name ``name``."""
    if name not in MODELS:
        raise DataError(f"unknown model {name!r}; known: {', '.join(MODELS)}", path=where)
    module, _, cls = MODELS[name].cls.partition(":")
    return getattr(importlib.import_module(module), cls)
