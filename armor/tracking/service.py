"""The online recommender behind `armor serve`: requests in, answers out, the registry followed.

Pure Python (no Ray): ``pipelines/serve.py`` wraps :class:`RecommenderService` in a Ray Serve
deployment, and the tests drive it directly. One service holds one loaded model version at a time
(its FAISS index and titles); :meth:`RecommenderService.follow` swaps in the version an alias names
when it moves. A request takes the loaded version once, at its start, so a request in flight
finishes on the version it started with, and every answer names the version that produced it.

``POST /recommend`` takes JSON ``{"history": [movie ids], "ratings": [optional, one per id],
"k": 10, "exclude_seen": true}``, or ``{"user_id": 42, ...}`` for a user the model knows (their
liked movies in the split the model was trained on, registered with it). With ratings, only
movies rated at or above the positive threshold (4.0, the evaluation protocol's) make the
profile. Answers ``{"model", "version", "k", "source", "recommendations": [{"rank", "movie_id",
"title", "score"}], "skipped": [ids outside the catalogue, left out], "used": n}``; ``source`` is
"embeddings", or "popularity" for an empty history (the most liked movies among the known users;
a version registered without profiles answers an empty history with 422). Bad input is a 4xx
with a message, never a 500: malformed JSON or fields (400), an unknown user (404), none of the
history's ids in the catalogue (422: the model has nothing to go on), ``k`` outside 1..max_k
(400), a body over ``max_body`` bytes (413).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import threading
import time
from typing import Any

from armor.errors import ArmorError

log = logging.getLogger("armor.serve")

POSITIVE_RATING = 4.0


class BadRequest(ArmorError):
    """A request that cannot be answered: its HTTP status and the message the client gets."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclasses.dataclass(frozen=True)
class Query:
    history: list[int]
    k: int
    exclude_seen: bool
    user_id: int | None = None  # a known user: the history is theirs, looked up in the loaded version


@dataclasses.dataclass(frozen=True)
class Loaded:
    version: str
    index: Any  # armor.retrieval.index.ItemIndex
    titles: dict[int, str]
    loaded_at: float
    profiles: Any = None  # armor.tracking.serving.Profiles, when registered with the model


def parse_model_uri(model_uri: str) -> tuple[str, str | None, str | None]:
    """``models:/NAME@ALIAS`` -> (NAME, ALIAS, None); ``models:/NAME/VERSION`` -> (NAME, None, VERSION)."""
    if not model_uri.startswith("models:/"):
        raise ArmorError(f"model URI {model_uri!r}: serve takes a registered model, models:/NAME@ALIAS "
                         "or models:/NAME/VERSION")
    rest = model_uri[len("models:/"):].strip("/")
    if "@" in rest:
        name, alias = rest.split("@", 1)
        return name, alias, None
    name, _, version = rest.partition("/")
    if not version:
        raise ArmorError(f"model URI {model_uri!r}: name an alias (@champion) or a version (/3)")
    return name, None, version


def _int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or value != int(value):
        raise BadRequest(400, f"{what}: {value!r} is not an integer")
    return int(value)


def parse_request(body: bytes, max_k: int, max_body: int) -> Query:
    """The request's query; BadRequest says what is wrong with it."""
    if len(body) > max_body:
        raise BadRequest(413, f"request body of {len(body)} bytes is over the limit of {max_body}")
    try:
        payload = json.loads(body or b"null")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadRequest(400, f"request body is not JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise BadRequest(400, 'request body must be a JSON object such as {"history": [1, 2, 3], "k": 10}')
    unknown = sorted(set(payload) - {"history", "user_id", "ratings", "k", "exclude_seen"})
    if unknown:
        raise BadRequest(400, f"unknown field(s) {', '.join(unknown)}; known: history, user_id, ratings, k, "
                              "exclude_seen")
    if ("history" in payload) == ("user_id" in payload):
        raise BadRequest(400, 'give exactly one of "history" (a list of movie ids) and "user_id" (a user the model '
                              "knows)")
    user = None if payload.get("user_id") is None else _int(payload["user_id"], "user_id")
    history = [] if user is not None else payload.get("history")
    if not isinstance(history, list):
        raise BadRequest(400, f"history: expected a list of movie ids, got {history!r}")
    ids = [_int(m, "history") for m in history]
    ratings = payload.get("ratings")
    if ratings is not None:
        if not isinstance(ratings, list) or len(ratings) != len(ids) \
                or not all(isinstance(r, (int, float)) and not isinstance(r, bool) for r in ratings):
            raise BadRequest(400, f"ratings: expected {len(ids)} numbers, one per history id")
        ids = [m for m, r in zip(ids, ratings) if r >= POSITIVE_RATING]
    k = _int(payload.get("k", 10), "k")
    if not 1 <= k <= max_k:
        raise BadRequest(400, f"k: {k} is outside 1..{max_k}")
    exclude = payload.get("exclude_seen", True)
    if not isinstance(exclude, bool):
        raise BadRequest(400, f"exclude_seen: expected true or false, got {exclude!r}")
    return Query(ids, k, exclude, user)


class RecommenderService:
    """One replica's model: load, answer, follow the alias (see the module docstring)."""

    def __init__(self, model_uri: str, tracking_uri: str | None = None, max_k: int = 100,
                 max_body: int = 64 * 1024):
        self.name, self.alias, pinned = parse_model_uri(model_uri)
        self.tracking_uri, self.max_k, self.max_body = tracking_uri, max_k, max_body
        self._lock = threading.Lock()  # one load at a time; answering never waits on it
        self.loaded = self._load(pinned or self._alias_version())

    def _alias_version(self) -> str:
        from armor.tracking.registry import alias_version

        version = alias_version(self.name, self.alias or "", self.tracking_uri)
        if version is None:
            raise ArmorError(f"models:/{self.name}@{self.alias}: no such alias in the registry at {self.tracking_uri}")
        return version

    def _load(self, version: str) -> Loaded:
        from armor.tracking.serving import load_registered_model

        started = time.perf_counter()
        pyfunc = load_registered_model(f"models:/{self.name}/{version}", self.tracking_uri).unwrap_python_model()
        log.info("serve: loaded %s version %s in %.1f s", self.name, version, time.perf_counter() - started)
        return Loaded(version, pyfunc.index, dict(pyfunc.titles or {}), time.time(), pyfunc.profiles)

    def follow(self) -> bool:
        """Swap in the version the alias names now, if it moved; True when it did."""
        if self.alias is None:
            return False
        with self._lock:
            version = self._alias_version()
            if version == self.loaded.version:
                return False
            self.loaded = self._load(version)  # one assignment: a request sees the old or the new version
            return True

    def health(self) -> dict[str, Any]:
        loaded = self.loaded
        return {"status": "ok", "model": self.name, "alias": self.alias, "version": loaded.version,
                "movies": len(loaded.index), "known_users": len(loaded.profiles or ()),
                "loaded_at": loaded.loaded_at}

    def answer_many(self, queries: list[Query]) -> list[dict[str, Any]]:
        """Answers to several parsed queries, all by the same loaded version."""
        from armor.tracking.serving import RequestError, known_user_history

        loaded = self.loaded
        out: list[dict[str, Any]] = [{}] * len(queries)
        histories: dict[int, list[int]] = {}
        for i, query in enumerate(queries):
            try:
                histories[i] = query.history if query.user_id is None \
                    else known_user_history(loaded.profiles, query.user_id)
            except RequestError as exc:
                out[i] = self._error(loaded, 404, str(exc))
        for (k, exclude) in {(q.k, q.exclude_seen) for q in queries}:
            rows = [i for i, q in enumerate(queries) if (q.k, q.exclude_seen) == (k, exclude) and i in histories]
            skipped = [loaded.index.unknown(histories[i]) for i in rows]
            known = [[m for m in histories[i] if m not in set(s)] for i, s in zip(rows, skipped)]
            answerable = [j for j, h in enumerate(known) if h]
            ids, scores = loaded.index.recommend_many([known[j] for j in answerable], k, exclude) \
                if answerable else ([], [])
            results = dict(zip(answerable, zip(ids, scores)))
            for j, i in enumerate(rows):
                out[i] = self._response(loaded, k, skipped[j], len(known[j]), results.get(j), not histories[i])
        return out

    def _error(self, loaded: Loaded, status: int, message: str, **extra: Any) -> dict[str, Any]:
        return {"status": status, "error": message, "model": self.name, "version": loaded.version, **extra}

    def _response(self, loaded: Loaded, k: int, skipped: list[int], used: int, result: Any,
                  empty: bool) -> dict[str, Any]:
        source = "embeddings"
        if result is None and empty:
            if loaded.profiles is None:
                return self._error(loaded, 422, "history is empty (or no movie in it is rated >= 4), and this "
                                                "version was registered without its users' profiles, so it has no "
                                                "popularity to fall back on")
            result, source = loaded.profiles.popular(k), "popularity"
        elif result is None:
            return self._error(loaded, 422, f"none of the history's movie ids is in the catalogue of {self.name} "
                                            f"version {loaded.version}: {', '.join(map(str, skipped[:20]))}",
                               skipped=skipped)
        ids, scores = result
        keep = ids >= 0
        recommendations = [{"rank": r + 1, "movie_id": int(m), "title": loaded.titles.get(int(m), ""),
                            "score": float(s)} for r, (m, s) in enumerate(zip(ids[keep], scores[keep]))]
        return {"status": 200, "model": self.name, "version": loaded.version, "k": k, "source": source,
                "recommendations": recommendations, "skipped": skipped, "used": used}
