"""MLflow runs for ARMoR: where runs go, retries on a locked SQLite store, and a client-bound run wrapper.

Where runs go (:func:`tracking_uri`): a ``--tracking-uri`` flag, else ``MLFLOW_TRACKING_URI``,
else ``sqlite:///<workspace>/mlflow.db``. Nothing here sets a tracking URI globally: run helpers
use an ``MlflowClient`` bound to the URI they are given, and the few MLflow calls that only exist
in the fluent API (``mlflow.pyfunc.log_model``, ``mlflow.pyfunc.load_model``) run inside
:func:`using_tracking_uri`, a context that sets the URI and puts the previous one back (not
thread-safe: one at a time).

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
``ndcg_at_10`` (:func:`mlflow_key`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import random
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote, urlparse

import mlflow
import numpy as np
from mlflow.entities import Metric, Param, RunStatus, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from armor.errors import ArmorError, ConfigError

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_EXPERIMENT = "armor"
PARENT_RUN_TAG = "mlflow.parentRunId"

# MLflow's REST limits per log_batch request.
_MAX_METRICS_PER_BATCH = 1000
_MAX_PARAMS_PER_BATCH = 100
_MAX_PARAM_LENGTH = 6000


class TrackingError(ArmorError):
    """A tracking URI, experiment, run or registered model that cannot be used as asked."""


# ---------------------------------------------------------------------------- where runs go
def tracking_uri(workspace: str | Path, flag: str | None = None) -> str:
    """The flag, else ``MLFLOW_TRACKING_URI``, else ``sqlite:///<absolute workspace>/mlflow.db`` (whose
    recorded paths are first moved to this workspace if it was copied or moved: ``relocate``)."""
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
    db = Path(workspace).expanduser().resolve() / "mlflow.db"
    from armor.tracking.relocate import relocate_store

    relocate_store(db)  # a copied or moved workspace's store points into it, not into the original
    return "sqlite:///" + str(db)


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


def is_unreachable(exc: BaseException) -> bool:
    """True when an HTTP tracking server could not be reached even after MLflow's own retries."""
    text = str(exc)
    return isinstance(exc, MlflowException) and any(
        sign in text for sign in ("Max retries exceeded", "Failed to establish a new connection", "Read timed out"))


def http_retry_seconds() -> float:
    """How long MLflow's HTTP client keeps retrying a request to an unreachable server: urllib3
    sleeps min(120, factor x 2^(n-1)) s before its n-th retry from the second on."""
    from mlflow.environment_variables import MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR, MLFLOW_HTTP_REQUEST_MAX_RETRIES

    factor, retries = MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR.get(), MLFLOW_HTTP_REQUEST_MAX_RETRIES.get()
    return float(sum(min(120.0, factor * 2 ** (n - 1)) for n in range(2, retries + 1)))


def with_retries(fn: Callable[..., T], *args: Any, what: str = "MLflow write", attempts: int = 8,
                 base_delay: float = 0.1, max_delay: float = 4.0, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)``, retried with exponential backoff and jitter on 'database is locked'.

    An HTTP tracking server that stays unreachable through MLflow's own retries (about four
    minutes by default: ``http_retry_seconds``) raises TrackingError saying so and what to do,
    instead of MLflow's connection-pool traceback."""
    for attempt in range(attempts):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            if is_unreachable(exc):
                url = re.search(r"https?://[^/\s]+", str(exc))
                raise TrackingError(
                    f"MLflow tracking server {url.group(0) if url else ''} did not answer ({what}) for about "
                    f"{http_retry_seconds():.0f} s of retries: is it running? Restart it (mlflow/server.sh) and "
                    "rerun the command; an interrupted `armor tune` sweep continues with --resume, keeping its "
                    "finished trials. Longer outages: raise MLFLOW_HTTP_REQUEST_MAX_RETRIES.") from exc
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


def numeric(value: Any) -> float | None:
    """``value`` as a float when it is a number (bools count), else None: what a metric may be."""
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
                 for k, raw in metrics.items() if (v := numeric(raw)) is not None]
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
                      if k not in (step_key, "iteration") and (v := numeric(raw)) is not None]
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
    """Point MLflow's fluent API (tracking and registry) at ``uri`` for a block, then put it back.

    Both ways go through ``mlflow.set_tracking_uri`` / ``set_registry_uri``: besides the URI, the
    setter resets MLflow's tracer provider, which otherwise keeps exporting traces to ``uri`` after
    the block. None (nothing was set) unsets, as MLflow's own ``_use_tracking_uri`` passes it; the
    ``MLFLOW_*_URI`` variables the setters write for child processes are put back as they were.
    """
    if uri is None:
        yield
        return
    saved, env = _explicit_uris(), (os.environ.get("MLFLOW_TRACKING_URI"), os.environ.get("MLFLOW_REGISTRY_URI"))
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(saved[0])  # type: ignore[arg-type] - None unsets
        mlflow.set_registry_uri(saved[1])  # type: ignore[arg-type]
        for name, value in zip(("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"), env):
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _explicit_uris() -> tuple[str | None, str | None]:
    """The tracking and registry URIs set through ``mlflow.set_*_uri`` (None where not set).

    MLflow has no public getter for these: ``get_tracking_uri`` resolves the environment and the
    default, and setting that resolved value back would pin it (and leave the registry following
    the old tracking URI). This is the project's one use of these private names; a test
    (tests/unit/test_tracking_uri.py) fails if the pinned MLflow changes them.
    """
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    return tracking_utils._tracking_uri, registry_utils._registry_uri
