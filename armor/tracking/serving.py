"""Serving ARMoR from MLflow: a pyfunc recommender over item embeddings, its request format and loader.

The pyfunc's request and answer (also what ``mlflow models predict`` reads and writes):

- input: a DataFrame, one request per row, with a column ``history`` (a list of movie ids, or
  one string "1,2,3") for a user's top-K, ``user_id`` (a user the model knows: the history is
  that user's liked movies in the split the model was trained on) and/or ``movie_id`` (one id)
  for the K movies most similar to it; each row has exactly one of the three. An empty history
  is answered with the most popular movies when the model was registered with its split's
  profiles (``source`` "popularity"). ``k`` per row (column) or per call (param ``k``), default
  10; ``exclude_history`` param (default true) drops the history's own movies from its answer
  (the query movie is always dropped from its own answer).
- output: a long DataFrame, one row per recommendation: ``query`` (0-based position of the
  request row), ``rank`` (1-based), ``movie_id``, ``score`` (cosine), ``title`` when the
  model was logged with the movies table, ``source`` ("embeddings", or "popularity" for an empty
  history), ``skipped`` (the request's history ids outside the catalogue, left out: "37,99", or
  "") and ``error`` (""). Each row is answered on its own: a row that cannot be answered (not
  exactly one of history, user_id and movie_id, a malformed id or k, an empty history without
  profiles, no known id, an unknown user or query movie) gets one line, rank 0 and movie_id -1,
  whose ``error`` says why, and the other rows are answered; one unknown id never fails a batch.
  Long rather than one row of lists per request because
  CSV and JSON carry it without nested types and ``mlflow models predict`` writes it as plain
  records. A request never gets more answers than the catalogue has candidates.

``mlflow.pyfunc.load_model`` exists only in MLflow's fluent API, so :func:`load_registered_model`
runs it inside :func:`armor.tracking.runs.using_tracking_uri` (one at a time, not thread-safe).
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.metadata
import logging
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd
from mlflow.models import ModelSignature

from armor.retrieval.index import ItemIndex, RetrievalError
from armor.tracking.runs import using_tracking_uri

DEFAULT_K = 10
log = logging.getLogger("armor.serving")


class RequestError(RetrievalError):
    """A pyfunc request row that cannot be answered; names the row and the column."""


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


class Profiles:
    """The users a registered model knows and what they liked: the positives of its split's
    train and validation parts (the profile its refit trained on and test scoring used). A known
    user's id stands for that history; the movies' popularity among these users answers an empty
    history (score: the share of known users who liked the movie)."""

    def __init__(self, users: np.ndarray, movies: np.ndarray):
        users, movies = np.asarray(users, dtype=np.int64), np.asarray(movies, dtype=np.int64)
        order = np.argsort(users, kind="stable")  # each user's movies keep their stored order
        ids, starts = np.unique(users[order], return_index=True)
        self.histories = {int(u): movies[order][a:b].tolist()
                          for u, a, b in zip(ids, starts, [*starts[1:], len(order)])}
        popular, counts = np.unique(movies, return_counts=True)
        ranked = np.lexsort((popular, -counts))  # most liked first; ties by movie id
        self.popular_ids = popular[ranked]
        self.popular_scores = counts[ranked] / max(len(self.histories), 1)

    @classmethod
    def from_parquet(cls, path: str) -> Profiles:
        import pyarrow.parquet as pq

        table = pq.read_table(path, columns=["user_id", "movie_id"])
        return cls(table["user_id"].to_numpy(), table["movie_id"].to_numpy())

    def __len__(self) -> int:
        return len(self.histories)

    def history(self, user: int) -> list[int] | None:
        return self.histories.get(int(user))

    def popular(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` most popular movies and their scores."""
        return self.popular_ids[:k], self.popular_scores[:k].astype(np.float32)


@dataclasses.dataclass(frozen=True)
class _Query:
    row: int
    kind: str  # "history" | "movie_id" | "popular"
    k: int
    ids: list[int]
    skipped: list[int]  # a history's movie ids outside the catalogue, left out of its user vector


def known_user_history(profiles: Profiles | None, user: int) -> list[int]:
    """A known user's liked movies; RequestError when the model has no profiles or not this user."""
    if profiles is None:
        raise RequestError("user_id: this model version was registered without its users' profiles; send the "
                           "user's history instead")
    history = profiles.history(user)
    if history is None:
        raise RequestError(f"user_id {user} is not one of the {len(profiles)} users this model knows; send the "
                           "user's history instead")
    return history


def _parse_row(index: ItemIndex, row: int, record: Mapping[str, Any], default_k: int,
               profiles: Profiles | None = None) -> _Query:
    """One request row, checked; RequestError names the row and what is wrong with it."""
    given = {c: record.get(c) for c in ("history", "user_id", "movie_id") if not _missing(record.get(c))}
    if len(given) != 1:
        shown = ", ".join(f"{c}={record.get(c)!r}" for c in ("history", "user_id", "movie_id") if c in record)
        raise RequestError(f"row {row}: give exactly one of 'history' (a user's movies), 'user_id' (a user the "
                           f"model knows) and 'movie_id' (a query movie); got {shown}")
    row_k = default_k if _missing(record.get("k")) else _positive_int(record["k"], f"row {row}: k")
    if "movie_id" in given:
        movie = given["movie_id"]
        ids = _row_ints(movie, row, "movie_id")
        if len(ids) != 1:
            raise RequestError(f"row {row}: movie_id {movie!r}: give one movie id per row")
        if index.unknown(ids):
            raise RequestError(f"row {row}: movie_id {ids[0]} is not in the index's catalogue")
        return _Query(row, "movie_id", row_k, ids, [])
    if "user_id" in given:
        users = _row_ints(given["user_id"], row, "user_id")
        if len(users) != 1:
            raise RequestError(f"row {row}: user_id {given['user_id']!r}: give one user id per row")
        try:
            ids = known_user_history(profiles, users[0])
        except RequestError as exc:
            raise RequestError(f"row {row}: {exc}") from None
    else:
        ids = _row_ints(given["history"], row, "history")
    if not ids:
        if profiles is not None:
            return _Query(row, "popular", row_k, [], [])
        raise RequestError(f"row {row}: history is empty; give at least one movie id")
    unknown = index.unknown(ids)
    known = [m for m in ids if m not in set(unknown)]
    if not known:
        raise RequestError(f"row {row}: none of the history's movie ids is in the index's catalogue: "
                           f"{', '.join(map(str, unknown[:20]))}")
    return _Query(row, "history", row_k, known, unknown)


def answer_requests(index: ItemIndex, requests: pd.DataFrame, k: int = DEFAULT_K, exclude_history: bool = True,
                    titles: Mapping[int, str] | None = None, profiles: Profiles | None = None) -> pd.DataFrame:
    """The pyfunc's answer (see the module docstring) to a DataFrame of requests, each row on its own:
    a row that cannot be answered gets one line with its ``error`` (rank 0, movie_id -1), a history's
    unknown movie ids are left out and named in ``skipped``, and the other rows are answered as usual.
    What applies to every row (no request column, a bad ``k`` param) raises RequestError."""
    if not isinstance(requests, pd.DataFrame):
        requests = pd.DataFrame(requests)
    if not {"history", "user_id", "movie_id"} & set(requests.columns):
        raise RequestError(f"requests need a 'history', 'user_id' or 'movie_id' column; got columns "
                           f"{list(requests.columns)}")
    default_k = _positive_int(k, "param k")
    queries: list[_Query] = []
    failed: dict[int, str] = {}
    for row, record in enumerate(requests.to_dict("records")):
        try:
            queries.append(_parse_row(index, row, record, default_k, profiles))
        except RequestError as exc:
            failed[row] = str(exc)
    parts = [_error_rows(row, message) for row, message in failed.items()]
    for kind in ("history", "movie_id", "popular"):
        for row_k in sorted({q.k for q in queries if q.kind == kind}):
            group = [q for q in queries if q.kind == kind and q.k == row_k]
            if kind == "history":
                ids, scores = index.recommend_many([q.ids for q in group], row_k, exclude_history)
            elif kind == "movie_id":
                ids, scores = index.similar([q.ids[0] for q in group], row_k)
            else:
                assert profiles is not None
                top = profiles.popular(row_k)
                ids, scores = [top[0]] * len(group), [top[1]] * len(group)
            for query, row_ids, row_scores in zip(group, ids, scores):
                keep = row_ids >= 0
                n = int(keep.sum())
                parts.append(pd.DataFrame({"query": np.full(n, query.row, np.int64), "rank": np.arange(1, n + 1),
                                           "movie_id": row_ids[keep].astype(np.int64),
                                           "score": row_scores[keep].astype(np.float64),
                                           "source": "popularity" if kind == "popular" else "embeddings",
                                           "skipped": ",".join(map(str, query.skipped)), "error": ""}))
    out = (pd.concat(parts, ignore_index=True).sort_values(["query", "rank"], kind="stable").reset_index(drop=True)
           if parts else pd.DataFrame({c: pd.Series(dtype=t) for c, t in OUTPUT_COLUMNS.items()}))
    out = out[list(OUTPUT_COLUMNS)].astype(OUTPUT_COLUMNS)
    if titles is not None:
        out.insert(4, "title", [titles.get(int(m), "") for m in out["movie_id"]])
    return out


OUTPUT_COLUMNS = {"query": "int64", "rank": "int64", "movie_id": "int64", "score": "float64", "source": "object",
                  "skipped": "object", "error": "object"}


def _error_rows(row: int, message: str) -> pd.DataFrame:
    return pd.DataFrame({"query": [row], "rank": [0], "movie_id": [-1], "score": [math.nan], "source": [""],
                         "skipped": [""], "error": [message]})


class RecommenderPyfunc(mlflow.pyfunc.PythonModel):
    """History (or a movie) -> top-K movies by cosine over the logged item embeddings (exact FAISS)."""

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        self.index = ItemIndex.from_parquet(context.artifacts["item_embeddings"], kind="flat")
        profiles = context.artifacts.get("profiles")
        self.profiles = Profiles.from_parquet(profiles) if profiles else None
        self.titles = None
        movies = context.artifacts.get("movies")
        if movies:
            import pyarrow.parquet as pq

            from armor.data.schema import display_title

            table = pq.read_table(movies, columns=["movie_id", "title", "year"]).to_pylist()
            self.titles = {r["movie_id"]: display_title(r["title"], r["year"]) for r in table}

    # The DataFrame hints tell MLflow not to infer a schema from them (the explicit signature
    # holds it) and keep it from warning at class definition, i.e. at import.
    def predict(self, context: mlflow.pyfunc.PythonModelContext, model_input: pd.DataFrame,
                params: dict[str, Any] | None = None) -> pd.DataFrame:
        params = params or {}
        return answer_requests(self.index, model_input, k=params.get("k", DEFAULT_K),
                               exclude_history=_as_bool(params.get("exclude_history", True)), titles=self.titles,
                               profiles=self.profiles)


def _as_bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() not in ("false", "0", "no", "")
    return bool(value)


def model_signature(with_titles: bool = False) -> ModelSignature:
    """Inputs: optional ``history``, ``user_id``, ``movie_id``, ``k`` (any type: lists, strings and missing values
    pass MLflow's schema enforcement and are checked here instead); params ``k``, ``exclude_history``."""
    from mlflow.types.schema import AnyType, ColSpec, ParamSchema, ParamSpec, Schema

    inputs = Schema([ColSpec(AnyType(), "history", required=False), ColSpec(AnyType(), "user_id", required=False),
                     ColSpec(AnyType(), "movie_id", required=False), ColSpec(AnyType(), "k", required=False)])
    outputs = [ColSpec("long", "query"), ColSpec("long", "rank"), ColSpec("long", "movie_id"),
               ColSpec("double", "score")]
    if with_titles:
        outputs.append(ColSpec("string", "title"))
    outputs += [ColSpec("string", "source"), ColSpec("string", "skipped"), ColSpec("string", "error")]
    params = ParamSchema([ParamSpec("k", "long", DEFAULT_K), ParamSpec("exclude_history", "boolean", True)])
    return ModelSignature(inputs=inputs, outputs=Schema(outputs), params=params)


def pip_requirements() -> list[str]:
    """Pinned versions of what the pyfunc imports, as installed here (faiss-gpu when faiss-cpu is absent)."""
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


def load_registered_model(model_uri: str, uri: str | None = None) -> mlflow.pyfunc.PyFuncModel:
    """The pyfunc at ``model_uri`` (``models:/armor-item-embeddings@champion``, ``runs:/...``)."""
    with using_tracking_uri(uri):
        return mlflow.pyfunc.load_model(model_uri)


def recommend_from_registry(model_uri: str, history: Sequence[int] | str, k: int = DEFAULT_K,
                            uri: str | None = None) -> pd.DataFrame:
    """Top-``k`` for one history from a registered model: a DataFrame rank, movie_id, score (, title).

    The alias is resolved at each call, so a moved ``champion`` answers the next request. A history
    nothing of which can be answered raises RequestError; unknown ids are left out with a warning.
    """
    model = load_registered_model(model_uri, uri)
    history = history if isinstance(history, str) else [int(m) for m in history]
    answer = model.predict(pd.DataFrame({"history": [history]}), params={"k": int(k)})
    return single_answer(answer)


def single_answer(answer: pd.DataFrame) -> pd.DataFrame:
    """The pyfunc's answer to one request as rank, movie_id, score (, title): its error raised as
    RequestError, its skipped history ids logged as a warning."""
    if answer["error"].astype(bool).any():
        raise RequestError(answer["error"].iloc[0])
    skipped = answer["skipped"].iloc[0] if len(answer) else ""
    if skipped:
        log.warning("history: movie id(s) %s are not in the model's catalogue; answered without them", skipped)
    return answer.drop(columns=["query", "source", "skipped", "error"]).reset_index(drop=True)
