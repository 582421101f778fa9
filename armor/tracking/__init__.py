"""Experiment tracking and the model registry (MLflow): runs, aliases and a pyfunc recommender."""

from armor.tracking.mlflow import (
    CHALLENGER,
    CHAMPION,
    DEFAULT_MODEL_NAME,
    RecommenderPyfunc,
    RequestError,
    TrackedRun,
    TrackingError,
    alias_version,
    answer_requests,
    child_runs,
    ensure_experiment,
    flatten_params,
    load_recommender,
    mlflow_key,
    nested_run,
    promote,
    recommend_from_registry,
    register_embeddings,
    start_run,
    tracking_uri,
    using_tracking_uri,
    version_metric,
    with_retries,
)

__all__ = [
    "CHALLENGER", "CHAMPION", "DEFAULT_MODEL_NAME", "RecommenderPyfunc", "RequestError", "TrackedRun",
    "TrackingError", "alias_version", "answer_requests", "child_runs", "ensure_experiment", "flatten_params",
    "load_recommender", "mlflow_key", "nested_run", "promote", "recommend_from_registry", "register_embeddings",
    "start_run", "tracking_uri", "using_tracking_uri", "version_metric", "with_retries",
]
