"""Experiment tracking and the model registry (MLflow): runs (runs.py), registry and aliases
(registry.py) and a pyfunc recommender (serving.py)."""

from armor.tracking.registry import (
    CHALLENGER,
    CHAMPION,
    DEFAULT_MODEL_NAME,
    alias_version,
    promote,
    register_embeddings,
    version_metric,
)
from armor.tracking.runs import (
    TrackedRun,
    TrackingError,
    child_runs,
    ensure_experiment,
    flatten_params,
    mlflow_key,
    nested_run,
    start_run,
    tracking_uri,
    using_tracking_uri,
    with_retries,
)
from armor.tracking.serving import (
    RecommenderPyfunc,
    RequestError,
    answer_requests,
    load_registered_model,
    recommend_from_registry,
)

__all__ = [
    "CHALLENGER", "CHAMPION", "DEFAULT_MODEL_NAME", "RecommenderPyfunc", "RequestError", "TrackedRun",
    "TrackingError", "alias_version", "answer_requests", "child_runs", "ensure_experiment", "flatten_params",
    "load_registered_model", "mlflow_key", "nested_run", "promote", "recommend_from_registry",
    "register_embeddings", "start_run", "tracking_uri", "using_tracking_uri", "version_metric", "with_retries",
]
