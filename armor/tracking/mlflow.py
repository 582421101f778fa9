"""MLflow for ARMoR: where runs go, run helpers, the registry and a pyfunc recommender.

Where runs go (:func:`tracking_uri`): a ``--tracking-uri`` flag, else ``MLFLOW_TRACKING_URI``,
else ``sqlite:///<workspace>/mlflow.db``. Nothing here sets a tracking URI globally: run helpers
use an ``MlflowClient`` bound to the URI they are given, and the few MLflow calls that only exist
in the fluent API (``mlflow.pyfunc.log_model``, ``mlflow.pyfunc.load_model``) run inside a
context that sets the URI and puts the previous one back (not thread-safe: one at a time).

Concurrent writers. SQLite allows one writer at a time; several processes logging to one
``sqlite:///`` file (Ray Tune trials, data-parallel workers) can fail with ``sqlite3.
OperationalError: database is locked`` once a write waits longer than SQLite's busy timeout. The
recommended set-up for concurrency is a real tracking server (``mlflow/server.sh``, tracking
URI ``http://127.0.0.1:PORT``): processes then talk HTTP and only the server touches the
database. For the direct-SQLite case every write here is retried with exponential backoff and
jitter when the error (or its cause) says "database is locked"; a failed write is rolled back,
so a retry neither loses nor duplicates rows. Create the experiment on the driver
(:func:`ensure_experiment`) before trials start: the first connection creates and migrates the
SQLite schema, and several processes doing that at once is a race MLflow does not handle.

Names. MLflow metric, parameter and tag names may not contain ``@``; ``ndcg@10`` is logged as
``ndcg_at_10`` (:func:`mlflow_key`). A model version's validation NDCG@10 is its tag
``val_ndcg_at_10``.

Registry. Stages are deprecated: versions carry aliases. :func:`register_embeddings` logs a
:class:`RecommenderPyfunc` (registering a bare artifact folder fails in MLflow 3) and points
``challenger`` at the new version; :func:`promote` moves ``champion`` to a version only when its
validation NDCG@10 beats the current champion's.

The pyfunc's request and answer (also what ``mlflow models predict`` reads and writes):

- input: a DataFrame, one request per row, with a column ``history`` (a list of movie ids, or
  one string "1,2,3") for a user's top-K, and/or ``movie_id`` (one id) for the K movies most
  similar to it; each row has exactly one of the two. ``k`` per row (column) or per call
  (param ``k``), default 10; ``exclude_history`` param (default true) drops the history's own
  movies from its answer (the query movie is always dropped from its own answer).
- output: a long DataFrame, one row per recommendation: ``query`` (0-based position of the
  request row), ``rank`` (1-based), ``movie_id``, ``score`` (cosine), and ``title`` when the
  model was logged with the movies table. Long rather than one row of lists per request because
  CSV and JSON carry it without nested types and ``mlflow models predict`` writes it as plain
  records. A request never gets more answers than the catalogue has candidates.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.metadata
import json
import logging
import math
import os
import random
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote, urlparse

import mlflow.pyfunc
import numpy as np
import pandas as pd
from mlflow.entities import Metric, Param, RunStatus, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

import mlflow
from armor.errors import ArmorError, ConfigError
from armor.retrieval.index import ItemIndex, RetrievalError

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_EXPERIMENT = "armor"
DEFAULT_MODEL_NAME = "armor-item-embeddings"
CHAMPION = "champion"
CHALLENGER = "challenger"
SELECTION_METRIC = "val_ndcg@10"
EMBEDDINGS_FILE = "item_embeddings.parquet"
METRICS_FILE = "metrics.json"
PARENT_RUN_TAG = "mlflow.parentRunId"
MODEL_ARTIFACT_NAME = "recommender"
DEFAULT_K = 10

# MLflow's REST limits per log_batch request.
_MAX_METRICS_PER_BATCH = 1000
_MAX_PARAMS_PER_BATCH = 100
_MAX_PARAM_LENGTH = 6000


class TrackingError(ArmorError):
    """A tracking URI, experiment, run or registered model that cannot be used as asked."""


class RequestError(RetrievalError):
    """A pyfunc request row that cannot be answered; names the row and the column."""


# ---------------------------------------------------------------------------- where runs go
def tracking_uri(workspace: str | Path, flag: str | None = None) -> str:
    """The flag, else ``MLFLOW_TRACKING_URI``, else ``sqlite:///<absolute workspace>/mlflow.db``."""
    if flag:
        return flag
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    if "://" in str(workspace):
        raise ConfigError(f"--tracking-uri: workspace {workspace} is not a local directory, so it cannot hold "
                          "an SQLite store; pass --tracking-uri http://HOST:PORT (see mlflow/README.md)")
    # Three slashes then the absolute path ("sqlite:////abs/mlflow.db"): with only three in all,
    # SQLAlchemy reads the path as relative to the working directory.
    return "sqlite:///" + str(Path(workspace).expanduser().resolve() / "mlflow.db")


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (``sqlite:////abs`` and ``sqlite:///rel``); else None."""
    if not uri.startswith("sqlite:"):
        return None
    path = unquote(urlparse(uri).path)
    # sqlite:///rel/x.db -> "/rel/x.db" (relative), sqlite:////abs/x.db -> "//abs/x.db" (absolute)
    return Path(path[1:]) if path.startswith("/") else Path(path)


def mlflow_key(name: str) -> str:
    """A metric / param / tag name MLflow accepts: ``ndcg@10`` -> ``ndcg_at_10``, other symbols -> ``_``."""
    return re.sub(r"[^\w./\- :]", "_", name.replace("@", "_at_"))


# ---------------------------------------------------------------------------- retries
def is_database_locked(exc: BaseException) -> bool:
    """True for SQLite's 'database is locked', however MLflow or SQLAlchemy wrapped it."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if "database is locked" in str(current).lower():
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


def with_retries(fn: Callable[..., T], *args: Any, what: str = "MLflow write", attempts: int = 8,
                 base_delay: float = 0.1, max_delay: float = 4.0, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)``, retried with exponential backoff and jitter on 'database is locked'."""
    for attempt in range(attempts):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            if not is_database_locked(exc) or attempt == attempts - 1:
                raise
            delay = min(max_delay, base_delay * 2**attempt) * (0.5 + random.random())
            log.warning("%s: SQLite database is locked (attempt %d of %d); retrying in %.2f s. "
                        "Several writers share one sqlite file: a tracking server avoids this "
                        "(mlflow/README.md)", what, attempt + 1, attempts, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")


# ---------------------------------------------------------------------------- experiments
def ensure_experiment(name: str, uri: str, artifact_location: str | None = None) -> str:
    """The id of experiment ``name``, created if missing; safe when several processes race to create it.

    With an SQLite store and no ``artifact_location`` the experiment's artifacts go next to the
    database (``<db dir>/mlartifacts``), not into whatever directory the process happens to run in.
    Call it on the driver before any trial starts.
    """
    db = sqlite_path(uri)
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)
        if artifact_location is None:
            artifact_location = (db.resolve().parent / "mlartifacts").as_uri()
    client = MlflowClient(tracking_uri=uri)
    for _ in range(5):
        experiment = with_retries(client.get_experiment_by_name, name, what=f"experiment {name!r}")
        if experiment is not None:
            if experiment.lifecycle_stage == "deleted":
                raise TrackingError(f"experiment {name!r} (id {experiment.experiment_id}) at {uri} is deleted; "
                                    f"restore it (mlflow experiments restore --experiment-id "
                                    f"{experiment.experiment_id}) or choose another experiment name")
            return experiment.experiment_id
        try:
            return with_retries(client.create_experiment, name, artifact_location=artifact_location,
                                what=f"create experiment {name!r}")
        except MlflowException as exc:
            # Another process created it between our lookup and our create: look it up again.
            if exc.error_code != "RESOURCE_ALREADY_EXISTS" and "already exists" not in str(exc):
                raise
    raise TrackingError(f"experiment {name!r} at {uri}: could neither find nor create it")


# ---------------------------------------------------------------------------- runs
def flatten_params(config: Any, prefix: str = "") -> dict[str, str]:
    """``dataclasses.asdict(config)`` (or a mapping) flattened: nested keys joined with '.'."""
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        config = dataclasses.asdict(config)
    out: dict[str, str] = {}
    for key, value in (config or {}).items():
        name = f"{prefix}{key}"
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            value = dataclasses.asdict(value)
        if isinstance(value, Mapping) and value:
            out.update(flatten_params(value, prefix=f"{name}."))
        else:
            text = str(value)
            if len(text) > _MAX_PARAM_LENGTH:
                log.warning("param %s is %d characters; MLflow keeps %d", name, len(text), _MAX_PARAM_LENGTH)
                text = text[:_MAX_PARAM_LENGTH]
            out[mlflow_key(name)] = text
    return out


def _numeric(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float, np.integer, np.floating)):
        return float(value)
    return None


def _chunks(items: list[T], size: int) -> Iterator[list[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


@dataclasses.dataclass
class TrackedRun:
    """One MLflow run, written through a client bound to its tracking URI (no global state)."""

    run_id: str
    experiment_id: str
    uri: str
    client: MlflowClient = dataclasses.field(repr=False)

    def log_params(self, params: Any) -> None:
        """A dataclass or (nested) mapping, flattened with '.'; values as strings."""
        flat = [Param(k, v) for k, v in flatten_params(params).items()]
        for chunk in _chunks(flat, _MAX_PARAMS_PER_BATCH):
            with_retries(self.client.log_batch, self.run_id, params=chunk, what=f"run {self.run_id} params")

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """Numeric values of ``metrics`` at ``step``; non-numeric values (strings, None) are skipped."""
        now = int(time.time() * 1000)
        batch = [Metric(mlflow_key(k), v, now, step or 0)
                 for k, raw in metrics.items() if (v := _numeric(raw)) is not None]
        for chunk in _chunks(batch, _MAX_METRICS_PER_BATCH):
            with_retries(self.client.log_batch, self.run_id, metrics=chunk, what=f"run {self.run_id} metrics")

    def log_epoch_metrics(self, history: Sequence[Mapping[str, Any]], step_key: str = "epoch") -> int:
        """Every record of a training history, each metric at step = its epoch; returns the count logged.

        The step is ``record[step_key]``, else ``record["iteration"]`` (BPR), else its 1-based
        position. Logged in batches, so a 50-epoch history is one request, not 50.
        """
        now = int(time.time() * 1000)
        batch: list[Metric] = []
        for position, record in enumerate(history, start=1):
            step = record.get(step_key, record.get("iteration", position))
            batch += [Metric(mlflow_key(k), v, now, int(step)) for k, raw in record.items()
                      if k not in (step_key, "iteration") and (v := _numeric(raw)) is not None]
        for chunk in _chunks(batch, _MAX_METRICS_PER_BATCH):
            with_retries(self.client.log_batch, self.run_id, metrics=chunk, what=f"run {self.run_id} history")
        return len(batch)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        batch = [RunTag(k, str(v)) for k, v in tags.items()]
        if batch:
            with_retries(self.client.log_batch, self.run_id, tags=batch, what=f"run {self.run_id} tags")

    def log_artifacts(self, local_dir: str | Path, artifact_path: str | None = None) -> None:
        """Upload a directory (through the server's artifact proxy when the URI is http)."""
        local_dir = Path(local_dir)
        if not local_dir.is_dir():
            raise TrackingError(f"{local_dir}: not a directory; nothing to log as artifacts of run {self.run_id}")
        self.client.log_artifacts(self.run_id, str(local_dir), artifact_path)

    def log_artifact(self, local_path: str | Path, artifact_path: str | None = None) -> None:
        local_path = Path(local_path)
        if not local_path.is_file():
            raise TrackingError(f"{local_path}: no such file to log as an artifact of run {self.run_id}")
        self.client.log_artifact(self.run_id, str(local_path), artifact_path)


@contextlib.contextmanager
def start_run(experiment: str, uri: str, config: Any = None, *, run_name: str | None = None,
              tags: Mapping[str, Any] | None = None, parent_run_id: str | None = None,
              run_id: str | None = None) -> Iterator[TrackedRun]:
    """A run in ``experiment`` (created if needed) with ``config`` logged as flattened params.

    ``parent_run_id`` makes it a child (tag ``mlflow.parentRunId``; it goes into the parent's
    experiment so the UI nests it). ``run_id`` resumes an existing run instead of creating one.
    The run ends FINISHED, or FAILED (KILLED on Ctrl-C) when the block raises.
    """
    client = MlflowClient(tracking_uri=uri)
    if run_id is not None:
        info = with_retries(client.get_run, run_id, what=f"run {run_id}").info
        with_retries(client.update_run, run_id, status="RUNNING", what=f"run {run_id}")
        experiment_id = info.experiment_id
    else:
        all_tags = {k: str(v) for k, v in (tags or {}).items()}
        if parent_run_id is not None:
            experiment_id = with_retries(client.get_run, parent_run_id, what=f"parent run {parent_run_id}") \
                .info.experiment_id
            all_tags[PARENT_RUN_TAG] = parent_run_id
        else:
            experiment_id = ensure_experiment(experiment, uri)
        created = with_retries(client.create_run, experiment_id, tags=all_tags, run_name=run_name,
                               what=f"new run in experiment {experiment!r}")
        run_id = created.info.run_id
    run = TrackedRun(run_id=run_id, experiment_id=experiment_id, uri=uri, client=client)
    status = RunStatus.to_string(RunStatus.FINISHED)
    try:
        if config is not None:
            run.log_params(config)
        yield run
    except KeyboardInterrupt:
        status = RunStatus.to_string(RunStatus.KILLED)
        raise
    except BaseException:
        status = RunStatus.to_string(RunStatus.FAILED)
        raise
    finally:
        with_retries(client.set_terminated, run_id, status, what=f"end run {run_id}")


def nested_run(parent_run_id: str, uri: str, config: Any = None, *, run_name: str | None = None,
               tags: Mapping[str, Any] | None = None) -> contextlib.AbstractContextManager[TrackedRun]:
    """A child run of ``parent_run_id`` (one Tune trial under the sweep's parent run)."""
    return start_run(DEFAULT_EXPERIMENT, uri, config, run_name=run_name, tags=tags, parent_run_id=parent_run_id)


def child_runs(parent_run_id: str, uri: str) -> list:
    """The runs whose ``mlflow.parentRunId`` is ``parent_run_id`` (mlflow.entities.Run objects)."""
    client = MlflowClient(tracking_uri=uri)
    parent = client.get_run(parent_run_id)
    return client.search_runs([parent.info.experiment_id], f"tags.`{PARENT_RUN_TAG}` = '{parent_run_id}'",
                              max_results=10000)


@contextlib.contextmanager
def using_tracking_uri(uri: str | None) -> Iterator[None]:
    """Point MLflow's fluent API (tracking and registry) at ``uri`` for a block, then put it back."""
    if uri is None:
        yield
        return
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    saved = (tracking_utils._tracking_uri, registry_utils._registry_uri,
             os.environ.get("MLFLOW_TRACKING_URI"), os.environ.get("MLFLOW_REGISTRY_URI"))
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        yield
    finally:
        tracking_utils._tracking_uri, registry_utils._registry_uri = saved[0], saved[1]
        for name, value in (("MLFLOW_TRACKING_URI", saved[2]), ("MLFLOW_REGISTRY_URI", saved[3])):
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


# ---------------------------------------------------------------------------- the pyfunc
def _row_ints(value: Any, row: int, column: str) -> list[int]:
    if isinstance(value, str):
        text = value.strip().strip("[]()")
        parts = [p for p in re.split(r"[\s,;]+", text) if p]
        values: Iterable[Any] = parts
    elif isinstance(value, (list, tuple, np.ndarray, pd.Series)):
        values = list(value)
    else:
        values = [value]
    out = []
    for v in values:
        try:
            number = float(v)
        except (TypeError, ValueError):
            number = math.nan
        if not math.isfinite(number) or number != int(number):
            raise RequestError(f"row {row}: {column} {value!r}: {v!r} is not a movie id (an integer)")
        out.append(int(number))
    return out


def _missing(value: Any) -> bool:
    if isinstance(value, (list, tuple, np.ndarray, pd.Series)):
        return False
    if isinstance(value, str):
        return not value.strip()
    return value is None or bool(pd.isna(value))


def _positive_int(value: Any, what: str) -> int:
    try:
        number = float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number) or number != int(number) or number < 1:
        raise RequestError(f"{what}: {value!r} is not a positive integer")
    return int(number)


def answer_requests(index: ItemIndex, requests: pd.DataFrame, k: int = DEFAULT_K, exclude_history: bool = True,
                    titles: Mapping[int, str] | None = None) -> pd.DataFrame:
    """The pyfunc's answer (see the module docstring) to a DataFrame of requests."""
    if not isinstance(requests, pd.DataFrame):
        requests = pd.DataFrame(requests)
    if "history" not in requests.columns and "movie_id" not in requests.columns:
        raise RequestError(f"requests need a 'history' or a 'movie_id' column; got columns {list(requests.columns)}")
    default_k = _positive_int(k, "param k")
    histories: dict[int, tuple[int, list[int]]] = {}
    movies: dict[int, tuple[int, int]] = {}
    for row, record in enumerate(requests.to_dict("records")):
        history, movie = record.get("history"), record.get("movie_id")
        has_history, has_movie = not _missing(history), not _missing(movie)
        if has_history == has_movie:
            raise RequestError(f"row {row}: give exactly one of 'history' (a user's movies) and 'movie_id' "
                               f"(a query movie); got history={history!r}, movie_id={movie!r}")
        row_k = default_k if _missing(record.get("k")) else _positive_int(record["k"], f"row {row}: k")
        if has_history:
            ids = _row_ints(history, row, "history")
            if not ids:
                raise RequestError(f"row {row}: history is empty; give at least one movie id")
            histories[row] = (row_k, ids)
        else:
            ids = _row_ints(movie, row, "movie_id")
            if len(ids) != 1:
                raise RequestError(f"row {row}: movie_id {movie!r}: give one movie id per row")
            movies[row] = (row_k, ids[0])

    parts = []
    for kind, requests_of_kind in (("history", histories), ("movie_id", movies)):
        for row_k in sorted({kk for kk, _ in requests_of_kind.values()}):
            rows = [r for r, (kk, _) in requests_of_kind.items() if kk == row_k]
            queries = [requests_of_kind[r][1] for r in rows]
            try:
                if kind == "history":
                    ids, scores = index.recommend_many(queries, row_k, exclude_history)
                else:
                    ids, scores = index.similar(queries, row_k)
            except RetrievalError as exc:
                raise RequestError(f"rows {rows[:10]}{'...' if len(rows) > 10 else ''}: {exc}") from exc
            for row, row_ids, row_scores in zip(rows, ids, scores):
                keep = row_ids >= 0
                n = int(keep.sum())
                parts.append(pd.DataFrame({"query": np.full(n, row, np.int64), "rank": np.arange(1, n + 1),
                                           "movie_id": row_ids[keep].astype(np.int64),
                                           "score": row_scores[keep].astype(np.float64)}))
    columns = ["query", "rank", "movie_id", "score"]
    out = (pd.concat(parts, ignore_index=True).sort_values(["query", "rank"], kind="stable").reset_index(drop=True)
           if parts else pd.DataFrame({c: pd.Series(dtype="int64" if c != "score" else "float64") for c in columns}))
    if titles is not None:
        out["title"] = [titles.get(int(m), "") for m in out["movie_id"]]
    return out


class RecommenderPyfunc(mlflow.pyfunc.PythonModel):
    """History (or a movie) -> top-K movies by cosine over the logged item embeddings (exact FAISS)."""

    def load_context(self, context) -> None:
        self.index = ItemIndex.from_parquet(context.artifacts["item_embeddings"], kind="flat")
        self.titles = None
        movies = context.artifacts.get("movies")
        if movies:
            import pyarrow.parquet as pq

            from armor.data.schema import display_title

            table = pq.read_table(movies, columns=["movie_id", "title", "year"]).to_pylist()
            self.titles = {r["movie_id"]: display_title(r["title"], r["year"]) for r in table}

    # The DataFrame hints tell MLflow not to infer a schema from them (the explicit signature
    # holds it) and keep it from warning at class definition, i.e. at import.
    def predict(self, context, model_input: pd.DataFrame,
                params: dict[str, Any] | None = None) -> pd.DataFrame:
        params = params or {}
        return answer_requests(self.index, model_input, k=params.get("k", DEFAULT_K),
                               exclude_history=_as_bool(params.get("exclude_history", True)), titles=self.titles)


def _as_bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() not in ("false", "0", "no", "")
    return bool(value)


def model_signature(with_titles: bool = False):
    """Inputs: optional ``history``, ``movie_id``, ``k`` (any type: lists, strings and missing values
    pass MLflow's schema enforcement and are checked here instead); params ``k``, ``exclude_history``."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import AnyType, ColSpec, ParamSchema, ParamSpec, Schema

    inputs = Schema([ColSpec(AnyType(), "history", required=False), ColSpec(AnyType(), "movie_id", required=False),
                     ColSpec(AnyType(), "k", required=False)])
    outputs = [ColSpec("long", "query"), ColSpec("long", "rank"), ColSpec("long", "movie_id"),
               ColSpec("double", "score")]
    if with_titles:
        outputs.append(ColSpec("string", "title"))
    params = ParamSchema([ParamSpec("k", "long", DEFAULT_K), ParamSpec("exclude_history", "boolean", True)])
    return ModelSignature(inputs=inputs, outputs=Schema(outputs), params=params)


def _requirements() -> list[str]:
    out = []
    for package in ("mlflow", "faiss-cpu", "numpy", "pandas", "pyarrow", "scipy"):
        try:
            out.append(f"{package}=={importlib.metadata.version(package)}")
        except importlib.metadata.PackageNotFoundError:
            # faiss-gpu installs the same module under another distribution name.
            if package == "faiss-cpu":
                with contextlib.suppress(importlib.metadata.PackageNotFoundError):
                    out.append(f"faiss-gpu=={importlib.metadata.version('faiss-gpu')}")
    return out


# ---------------------------------------------------------------------------- registry
def validation_metrics(model_dir: str | Path) -> dict[str, float]:
    """``{"val_ndcg@10": ...}`` etc. from a model dir's metrics.json (written by ``armor train``)."""
    path = Path(model_dir) / METRICS_FILE
    try:
        summary = json.loads(path.read_text())
        valid = summary["valid"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise TrackingError(f"{path}: no validation metrics ({exc}); pass metrics={{'val_ndcg@10': ...}} "
                            "or train the model with `armor train` first") from exc
    return {f"val_{k}": float(v) for k, v in valid.items() if _numeric(v) is not None}


def register_embeddings(model_dir: str | Path, name: str = DEFAULT_MODEL_NAME, run_id: str | None = None,
                        uri: str | None = None, metrics: Mapping[str, float] | None = None, *,
                        movies: str | Path | None = None, experiment: str = DEFAULT_EXPERIMENT,
                        alias: str = CHALLENGER) -> str:
    """Log the model dir's item embeddings as a :class:`RecommenderPyfunc`, register it as a new
    version of ``name``, tag it with its validation metrics (``val_ndcg_at_10`` ...) and point
    ``alias`` (challenger) at it. Returns the version.

    ``metrics`` default to the model dir's metrics.json; they must include ``val_ndcg@10``.
    ``run_id``: log into that run (else a new run in ``experiment``). ``movies``: a
    movies.parquet whose titles the answers then carry.
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
    example = pd.DataFrame({"history": [[int(m) for m in index.movie_ids[:3]]]})
    armor_dir = Path(__file__).resolve().parent.parent
    uri = uri or mlflow.get_tracking_uri()
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)

    def log_model(run: TrackedRun) -> str:
        run.log_metrics(metrics)
        run.set_tags({"armor.model_dir": str(model_dir.resolve()), "armor.catalogue": len(index)})
        with using_tracking_uri(uri):
            active = mlflow.active_run()
            context = (contextlib.nullcontext() if active is not None and active.info.run_id == run.run_id
                       else mlflow.start_run(run_id=run.run_id, nested=active is not None))
            with context:
                info = mlflow.pyfunc.log_model(
                    name=MODEL_ARTIFACT_NAME, python_model=RecommenderPyfunc(), artifacts=artifacts,
                    registered_model_name=name, signature=model_signature(with_titles=movies is not None),
                    input_example=example, pip_requirements=_requirements(),
                    # The model carries the code it needs, so serving it needs no ARMoR install.
                    code_paths=[str(armor_dir)],
                    metadata={"armor_model_dir": str(model_dir.resolve()), "catalogue": len(index),
                              "dim": index.dim, "metric": "cosine"})
        if info.registered_model_version is None:
            raise TrackingError(f"model {name!r}: MLflow logged run {run.run_id} but registered no version")
        return str(info.registered_model_version)

    if run_id is not None:
        with start_run(experiment, uri, run_id=run_id) as run:
            version = log_model(run)
    else:
        with start_run(experiment, uri, run_name=f"register-{model_dir.name}") as run:
            version = log_model(run)
    for key, value in metrics.items():
        with_retries(client.set_model_version_tag, name, version, mlflow_key(key), repr(float(value)),
                     what=f"{name} v{version} tag")
    with_retries(client.set_model_version_tag, name, version, "armor.model_dir", str(model_dir.resolve()),
                 what=f"{name} v{version} tag")
    with_retries(client.set_registered_model_alias, name, alias, version, what=f"{name} alias {alias}")
    log.info("registered %s version %s (%s %.4f) as @%s", name, version, SELECTION_METRIC,
             metrics[SELECTION_METRIC], alias)
    return version


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


def promote(name: str, version: str | int, uri: str | None = None, metric: str = SELECTION_METRIC) -> bool:
    """Move ``champion`` to ``version`` if its validation metric beats the champion's (or there is none).

    Returns True when ``version`` is the champion afterwards, False when the champion stays put.
    Only validation metrics decide: a test score never picks a model.
    """
    version = str(version)
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    candidate = version_metric(name, version, uri, metric)
    current = alias_version(name, CHAMPION, uri)
    if current == version:
        return True
    if current is not None:
        incumbent = version_metric(name, current, uri, metric)
        if not candidate > incumbent:
            log.info("%s v%s (%s %.4f) does not beat champion v%s (%.4f); champion unchanged",
                     name, version, metric, candidate, current, incumbent)
            return False
    with_retries(client.set_registered_model_alias, name, CHAMPION, version, what=f"{name} alias {CHAMPION}")
    log.info("%s v%s (%s %.4f) is now @%s (was %s)", name, version, metric, candidate, CHAMPION,
             f"v{current}" if current else "none")
    return True


def load_recommender(model_uri: str, uri: str | None = None):
    """The pyfunc at ``model_uri`` (``models:/armor-item-embeddings@champion``, ``runs:/...``)."""
    with using_tracking_uri(uri):
        return mlflow.pyfunc.load_model(model_uri)


def recommend_from_registry(model_uri: str, history: Sequence[int] | str, k: int = DEFAULT_K,
                            uri: str | None = None) -> pd.DataFrame:
    """Top-``k`` for one history from a registered model: a DataFrame rank, movie_id, score (, title).

    The alias is resolved at each call, so a moved ``champion`` answers the next request.
    """
    model = load_recommender(model_uri, uri)
    history = history if isinstance(history, str) else [int(m) for m in history]
    answer = model.predict(pd.DataFrame({"history": [history]}), params={"k": int(k)})
    return answer.drop(columns=["query"]).reset_index(drop=True)
