"""The MLflow model registry for ARMoR: registering item embeddings and promoting by validation score.

Stages are deprecated: versions carry aliases. :func:`register_embeddings` logs a
:class:`~armor.tracking.serving.RecommenderPyfunc` (registering a bare artifact folder fails in
MLflow 3) and points ``challenger`` at the new version; :func:`promote` moves a champion alias to a
version only when its validation NDCG@10 beats the current champion's. A model version's
validation NDCG@10 is its tag ``val_ndcg_at_10`` (:func:`armor.tracking.runs.mlflow_key`).

Scores from different splits are not comparable (leave-one-out's NDCG@10 is several times lower
than 80/10/10's), so a version tagged with its protocol (``armor.protocol``, the split it was
trained on) competes only within it: the registry keeps ``champion-PROTOCOL`` per protocol, and
``champion`` is ``champion-random`` (the 80/10/10 protocol, what `armor recommend` serves by
default). A version without a protocol tag competes for ``champion`` directly.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Mapping
from pathlib import Path

import mlflow
import mlflow.pyfunc
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from armor.retrieval.index import ItemIndex
from armor.tracking.runs import (
    DEFAULT_EXPERIMENT,
    TrackedRun,
    TrackingError,
    mlflow_key,
    numeric,
    start_run,
    using_tracking_uri,
    with_retries,
)
from armor.tracking.serving import RecommenderPyfunc, model_signature, pip_requirements

log = logging.getLogger(__name__)

DEFAULT_MODEL_NAME = "armor-item-embeddings"
CHAMPION = "champion"
CHALLENGER = "challenger"
DEFAULT_PROTOCOL = "random"  # the protocol whose champion is also @champion
PROTOCOL_TAG = "armor.protocol"
SELECTION_METRIC = "val_ndcg@10"
EMBEDDINGS_FILE = "item_embeddings.parquet"
METRICS_FILE = "metrics.json"
MODEL_ARTIFACT_NAME = "recommender"


def validation_metrics(model_dir: str | Path) -> dict[str, float]:
    """``{"val_ndcg@10": ...}`` etc. from a model dir's metrics.json (written by ``armor train``)."""
    path = Path(model_dir) / METRICS_FILE
    try:
        summary = json.loads(path.read_text())
        valid = summary["valid"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise TrackingError(f"{path}: no validation metrics ({exc}); pass metrics={{'val_ndcg@10': ...}} "
                            "or train the model with `armor train` first") from exc
    return {f"val_{k}": float(v) for k, v in valid.items() if numeric(v) is not None}


def register_embeddings(model_dir: str | Path, name: str = DEFAULT_MODEL_NAME, run_id: str | None = None,
                        uri: str | None = None, metrics: Mapping[str, float] | None = None, *,
                        movies: str | Path | None = None, profiles: str | Path | None = None,
                        experiment: str = DEFAULT_EXPERIMENT, alias: str = CHALLENGER,
                        protocol: str | None = None) -> str:
    """Log the model dir's item embeddings as a :class:`RecommenderPyfunc`, register it as a new
    version of ``name``, tag it with its validation metrics (``val_ndcg_at_10`` ...) and point
    ``alias`` (challenger) at it. Returns the version.

    ``metrics`` default to the model dir's metrics.json; they must include ``val_ndcg@10``.
    ``run_id``: log into that run (else a new run in ``experiment``). ``movies``: a
    movies.parquet whose titles the answers then carry. ``profiles``: a parquet of (user_id,
    movie_id) positives, the users the served model knows by id (``serving.Profiles``).
    ``protocol``: the split the model was trained on, tagged so that promotion compares it only
    with versions of the same protocol.
    """
    model_dir = Path(model_dir)
    embeddings = model_dir / EMBEDDINGS_FILE
    if not embeddings.is_file():
        raise TrackingError(f"{embeddings}: no item embeddings to register (models without embeddings, "
                            "such as popularity or BPR scores, cannot be served by this pyfunc)")
    metrics = dict(metrics) if metrics is not None else validation_metrics(model_dir)
    if SELECTION_METRIC not in metrics:
        raise TrackingError(f"{model_dir}: metrics have no {SELECTION_METRIC!r} (got {sorted(metrics)}); "
                            "the registry ranks versions by it")
    index = ItemIndex.from_parquet(embeddings)  # fails here, not at serving time, on a bad file
    artifacts = {"item_embeddings": str(embeddings)}
    if movies is not None:
        if not Path(movies).is_file():
            raise TrackingError(f"{movies}: no such movies table")
        artifacts["movies"] = str(movies)
    if profiles is not None:
        if not Path(profiles).is_file():
            raise TrackingError(f"{profiles}: no such profiles table")
        artifacts["profiles"] = str(profiles)
    uri = uri or mlflow.get_tracking_uri()
    # run_name only names a new run; with run_id the existing run is resumed as it is.
    with start_run(experiment, uri, run_name=f"register-{model_dir.name}", run_id=run_id) as run:
        run.log_metrics(metrics)
        run.set_tags({"armor.model_dir": str(model_dir.resolve()), "armor.catalogue": len(index)})
        version = _log_pyfunc(run, name, model_dir, index, artifacts)
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    for key, value in metrics.items():
        with_retries(client.set_model_version_tag, name, version, mlflow_key(key), repr(float(value)),
                     what=f"{name} v{version} tag")
    with_retries(client.set_model_version_tag, name, version, "armor.model_dir", str(model_dir.resolve()),
                 what=f"{name} v{version} tag")
    if protocol is not None:
        with_retries(client.set_model_version_tag, name, version, PROTOCOL_TAG, protocol, what=f"{name} v{version} tag")
    with_retries(client.set_registered_model_alias, name, alias, version, what=f"{name} alias {alias}")
    log.info("registered %s version %s (%s %.4f) as @%s", name, version, SELECTION_METRIC,
             metrics[SELECTION_METRIC], alias)
    return version


def _log_pyfunc(run: TrackedRun, name: str, model_dir: Path, index: ItemIndex, artifacts: dict[str, str]) -> str:
    """Log the pyfunc into ``run`` and register it under ``name``; returns the new version."""
    example = pd.DataFrame({"history": [[int(m) for m in index.movie_ids[:3]]]})
    armor_dir = Path(__file__).resolve().parent.parent
    with using_tracking_uri(run.uri):
        # log_model only exists in the fluent API, which logs into the active run: reuse it when
        # it is ours, else activate ours (nested under a foreign active run, as MLflow requires).
        active = mlflow.active_run()
        context = (contextlib.nullcontext() if active is not None and active.info.run_id == run.run_id
                   else mlflow.start_run(run_id=run.run_id, nested=active is not None))
        with context:
            info = mlflow.pyfunc.log_model(
                name=MODEL_ARTIFACT_NAME, python_model=RecommenderPyfunc(), artifacts=artifacts,
                registered_model_name=name, signature=model_signature(with_titles="movies" in artifacts),
                input_example=example, pip_requirements=pip_requirements(),
                # The model carries the code it needs, so serving it needs no ARMoR install.
                code_paths=[str(armor_dir)],
                metadata={"armor_model_dir": str(model_dir.resolve()), "catalogue": len(index),
                          "dim": index.dim, "metric": "cosine"})
    if info.registered_model_version is None:
        raise TrackingError(f"model {name!r}: MLflow logged run {run.run_id} but registered no version")
    return str(info.registered_model_version)


def version_metric(name: str, version: str | int, uri: str | None = None, metric: str = SELECTION_METRIC) -> float:
    """A registered version's validation metric, read from its tag."""
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    tag = mlflow_key(metric)
    value = client.get_model_version(name, str(version)).tags.get(tag)
    if value is None:
        raise TrackingError(f"model {name!r} version {version} has no tag {tag!r}; register it with "
                            "register_embeddings (which tags validation metrics) or set the tag")
    return float(value)


def alias_version(name: str, alias: str, uri: str | None = None) -> str | None:
    """The version ``name@alias`` points at, or None when the alias (or the model) does not exist."""
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            return None
        raise


def registered_model_dir(spec: str, uri: str | None = None) -> Path:
    """The model directory a registered version was made from: ``spec`` is ``NAME@ALIAS``,
    ``models:/NAME@ALIAS`` or ``models:/NAME/VERSION``."""
    reference = spec.removeprefix("models:/")
    name, at, alias = reference.partition("@")
    if not at:
        name, _, version = reference.rpartition("/")
        if not name or not version:
            raise TrackingError(f"{spec}: name a registered version as NAME@ALIAS or models:/NAME/VERSION")
    else:
        version = alias_version(name, alias, uri)
        if version is None:
            raise TrackingError(f"{spec}: no registered model {name!r} with alias {alias!r} at {uri}")
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    try:
        tags = client.get_model_version(name, str(version)).tags
    except MlflowException as exc:
        raise TrackingError(f"{spec}: no such registered version at {uri} ({exc.message})") from exc
    if "armor.model_dir" not in tags:
        raise TrackingError(f"{spec}: version {version} has no armor.model_dir tag; register it with `armor register`")
    return Path(tags["armor.model_dir"])


def champion_alias(protocol: str | None) -> str:
    """``champion-PROTOCOL`` (``champion`` for a version without a protocol)."""
    return CHAMPION if protocol is None else f"{CHAMPION}-{protocol}"


def promote(name: str, version: str | int, uri: str | None = None, metric: str = SELECTION_METRIC) -> bool:
    """Move the champion alias of ``version``'s protocol to it if its validation metric beats that
    champion's (or there is none); the default protocol's champion is also ``champion``.

    Returns True when ``version`` is its protocol's champion afterwards, False when the champion stays
    put. Only validation metrics of the same protocol decide: a test score never picks a model, and a
    leave-one-out score never competes with an 80/10/10 one.
    """
    version = str(version)
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    protocol = client.get_model_version(name, version).tags.get(PROTOCOL_TAG)
    alias = champion_alias(protocol)
    candidate = version_metric(name, version, uri, metric)
    current = alias_version(name, alias, uri)
    if current != version and current is not None:
        incumbent = version_metric(name, current, uri, metric)
        if not candidate > incumbent:
            log.info("%s v%s (%s %.4f) does not beat @%s v%s (%.4f); champion unchanged",
                     name, version, metric, candidate, alias, current, incumbent)
            return False
    aliases = [alias, CHAMPION] if protocol == DEFAULT_PROTOCOL else [alias]
    for each in aliases:
        with_retries(client.set_registered_model_alias, name, each, version, what=f"{name} alias {each}")
    log.info("%s v%s (%s %.4f) is now @%s (was %s)", name, version, metric, candidate, " and @".join(aliases),
             f"v{current}" if current else "none")
    return True
