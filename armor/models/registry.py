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
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from armor.config import ArmorGraphConfig, BPRConfig, FusionConfig, LightGCNConfig, TrainConfig, from_dict
from armor.errors import ConfigError, DataError
from armor.models.base import Recommender

FAMILIES = ("content", "interaction", "hybrid", "reference")


@dataclasses.dataclass(frozen=True)
class BuildContext:
    """What a factory may use: the settings, the catalogue's features (aligned with its items), a device."""

    settings: ModelSettings
    features: Mapping[str, np.ndarray] | None = None
    present: Mapping[str, np.ndarray] | None = None
    device: str = "cpu"
    new_items: np.ndarray | None = None  # catalogue columns of movies with no rating in the training log


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
    # Validation grids over the fields of ``grid_section``: "default" names a module's DEFAULT_GRID
    # (imported only when asked for), "small" is a quick one.
    default_grid: str | None = None
    small_grid: Mapping[str, Sequence[Any]] = dataclasses.field(default_factory=dict)
    grid_section: str | None = None

    def grid(self, which: str) -> Mapping[str, Sequence[Any]]:
        if self.grid_section is None or which not in ("default", "small"):
            raise ConfigError(f"--grid {which}: {self.name} has no validation grid"
                              + ("" if self.grid_section is None else "; choose default or small"))
        if which == "small":
            return self.small_grid
        assert self.default_grid is not None
        module, _, attribute = self.default_grid.partition(":")
        return getattr(importlib.import_module(module), attribute)


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

    return GraphHybrid(ctx.settings["armor_graph"], ctx.features, ctx.present, new_items=ctx.new_items,
                       device=ctx.device, num_threads=1 if ctx.device == "cpu" else None)


def _popularity(ctx: BuildContext) -> Recommender:
    from armor.models.baselines import Popularity

    return Popularity()


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
# Small grids for a quick, still validation-chosen, run (the demo); "default" grids are in the modules.
_BPR_SMALL = {"factors": [64], "learning_rate": [0.005, 0.02], "regularization": [0.001], "iterations": [300]}
_LIGHTGCN_SMALL = {"dim": [64], "layers": [3], "lr": [5e-3], "reg": [1e-3], "epochs": [150]}
_ITEMKNN_SMALL = {"k": [50, 200]}
_EASE_SMALL = {"l2": [100.0, 250.0, 500.0, 1000.0]}
_ALS_SMALL = {"factors": [64], "regularization": [0.01, 0.1], "alpha": [1.0, 10.0]}
_ARMOR_GRAPH_SMALL = {"layers": [2], "lr": [1e-2], "epochs": [150]}


MODELS: dict[str, ModelSpec] = {spec.name: spec for spec in (
    ModelSpec("text", "content", "Text-only (raw features)", True, _raw("text"),
              "armor.models.content:FeatureModel", paper_row="text"),
    ModelSpec("text-projected", "content", "Text-only (trained projection)", True, _projected("text"),
              "armor.models.content:ProjectedFeatureModel", _CONTENT),
    ModelSpec("image", "content", "Image-only (raw features)", True, _raw("image"),
              "armor.models.content:FeatureModel", paper_row="image"),
    ModelSpec("image-projected", "content", "Image-only (trained projection)", True, _projected("image"),
              "armor.models.content:ProjectedFeatureModel", _CONTENT),
    ModelSpec("fused-paper", "content", "Fused, paper's attention (eqs. 4.2-4.6)", True, _fused("paper"),
              "armor.models.content:FusionRecommender", _CONTENT, paper_row="fused", data_parallel=True),
    ModelSpec("fused", "content", "Fused, full attention (ours)", True, _fused("full"),
              "armor.models.content:FusionRecommender", _CONTENT, data_parallel=True),
    ModelSpec("bpr", "interaction", "BPR", False, _bpr, "armor.models.bpr:BPR", {"bpr": BPRConfig},
              paper_row="bpr", default_grid="armor.models.bpr:DEFAULT_GRID", small_grid=_BPR_SMALL, grid_section="bpr"),
    ModelSpec("lightgcn", "interaction", "LightGCN", False, _lightgcn, "armor.models.lightgcn:LightGCN",
              {"lightgcn": LightGCNConfig}, paper_row="lightgcn",
              default_grid="armor.models.lightgcn:DEFAULT_GRID", small_grid=_LIGHTGCN_SMALL, grid_section="lightgcn"),
    ModelSpec("itemknn", "interaction", "ItemKNN (cosine)", False, _itemknn, "armor.models.neighbors:ItemKNN",
              {"itemknn": _config("armor.models.neighbors", "ItemKNNConfig")},
              default_grid="armor.models.neighbors:ITEMKNN_GRID", small_grid=_ITEMKNN_SMALL, grid_section="itemknn"),
    ModelSpec("als", "interaction", "ALS (implicit)", False, _als, "armor.models.als:ALS",
              {"als": _config("armor.models.als", "ALSConfig")},
              default_grid="armor.models.als:DEFAULT_GRID", small_grid=_ALS_SMALL, grid_section="als"),
    ModelSpec("ease", "interaction", "EASE (Steck 2019)", False, _ease, "armor.models.neighbors:EASE",
              {"ease": _config("armor.models.neighbors", "EASEConfig")},
              default_grid="armor.models.neighbors:EASE_GRID", small_grid=_EASE_SMALL, grid_section="ease"),
    ModelSpec("armor-graph", "hybrid", "ARMoR-Graph (ours: graph + content graph + aligned content)", True,
              _armor_graph, "armor.models.graph_hybrid:GraphHybrid",
              {"armor_graph": ArmorGraphConfig},
              default_grid="armor.models.graph_hybrid:DEFAULT_GRID", small_grid=_ARMOR_GRAPH_SMALL,
              grid_section="armor_graph", data_parallel=True),
    ModelSpec("popularity", "reference", "Popularity", False, _popularity, "armor.models.baselines:Popularity"),
    ModelSpec("random", "reference", "Random", False, _random, "armor.models.baselines:RandomRanker",
              {"train": TrainConfig}),
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
                present: Mapping[str, np.ndarray] | None = None, device: str = "cpu",
                new_items: np.ndarray | None = None) -> Recommender:
    """A fresh, unfitted model ``name`` (features aligned with the catalogue's items when it needs them)."""
    entry = spec(name)
    if entry.needs_features and features is None:
        raise ConfigError(f"--model {name} ranks by item content and needs the feature store: run `armor encode`")
    model = entry.build(BuildContext(settings or ModelSettings(), features, present, device, new_items))
    assert model.name == name, f"registry entry {name!r} built a model named {model.name!r}"
    return model


def model_class(name: Any, where: str | Path | None = None) -> type[Recommender]:
    """The class that loads a saved model of registry name ``name``."""
    if name not in MODELS:
        raise DataError(f"unknown model {name!r}; known: {', '.join(MODELS)}", path=where)
    module, _, cls = MODELS[name].cls.partition(":")
    return getattr(importlib.import_module(module), cls)
