"""A local TMDB-compatible server (aiohttp.web) for tests, demos and offline scrapes.

It answers the few endpoints the scraper uses, in TMDB's JSON shapes: ``/3/movie/{id}``
(``append_to_response=videos``), ``/3/search/movie``, poster images at ``/t/p/{size}/{file}``
and YouTube-style thumbnails at ``/vi/{key}/hqdefault.jpg`` (an unknown key gets YouTube's
answer: 404 with a small grey placeholder JPEG). Point a client at it with
``TMDBClient(ScrapeConfig(**server.client_urls()), Credentials(token=server.token))``.

It serves a catalogue of :class:`~armor.tmdb.standin.FixtureMovie` (armor/tmdb/standin.py holds
the catalogues and their stand-in content); images are made lazily and kept in a small LRU.
``Faults`` injects latency, 429s, 5xx, dropped connections, stalls and bad
content, deterministically from a seed: transient faults are drawn per (URL, attempt number),
content faults per movie, so a test sees the same faults whatever the request interleaving.
Every request is recorded (monotonic time, path with ``api_key`` redacted, status, which
credential it carried) so tests can check rates and what was, or was not, requested.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import hashlib
import json
import logging
import re
import threading
import time
import unicodedata
import zlib
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from aiohttp import web

from armor.errors import ConfigError
from armor.tmdb.standin import FixtureMovie, bomb_png, corrupt, placeholder_jpeg, truncate, youtube_key

log = logging.getLogger(__name__)

DEFAULT_TOKEN = "fixture-token"
DEFAULT_API_KEY = "fixture-key"

# TMDB's genre ids; MovieLens-only genres map to their nearest TMDB genre.
TMDB_GENRES: Mapping[str, tuple[int, str]] = {
    "Action": (28, "Action"), "Adventure": (12, "Adventure"), "Animation": (16, "Animation"),
    "Children": (10751, "Family"), "Children's": (10751, "Family"), "Family": (10751, "Family"),
    "Comedy": (35, "Comedy"), "Crime": (80, "Crime"), "Documentary": (99, "Documentary"),
    "Drama": (18, "Drama"), "Fantasy": (14, "Fantasy"), "Film-Noir": (80, "Crime"),
    "History": (36, "History"), "Horror": (27, "Horror"), "Music": (10402, "Music"),
    "Musical": (10402, "Music"), "Mystery": (9648, "Mystery"), "Romance": (10749, "Romance"),
    "Sci-Fi": (878, "Science Fiction"), "Science Fiction": (878, "Science Fiction"),
    "Thriller": (53, "Thriller"), "War": (10752, "War"), "Western": (37, "Western"),
    "TV Movie": (10770, "TV Movie"),
}

MALICIOUS_POSTER_PATHS = ("/../../etc/passwd", "//evil.example/x.jpg", "/a.jpg?x=1",
                          "/%2e%2e/%2e%2e/etc/passwd.jpg", "https://evil.example/p.jpg", "/ok.jpg\n")
FAIL_MODES = ("429", "500", "502", "503", "504", "drop", "stall")
_POSTER_FILE = re.compile(r"p(\d+)\.jpg")


@dataclasses.dataclass(frozen=True)
class Faults:
    """What goes wrong, and how often. All draws are deterministic given ``seed``."""

    seed: int = 0
    latency: float = 0.0  # seconds added to every request but /health
    share_429: float = 0.0
    retry_after: float | None = 1.0  # Retry-After sent with 429s (seconds); None sends none
    share_5xx: float = 0.0
    share_drop: float = 0.0  # close the connection without answering
    share_corrupt: float = 0.0  # per image
    share_truncated: float = 0.0  # per image
    share_no_trailer: float = 0.0  # per movie
    bomb_ids: frozenset[int] = frozenset()  # poster declares 50000x50000 pixels
    malicious_path_ids: frozenset[int] = frozenset()
    wrong_type_ids: frozenset[int] = frozenset()  # poster served as text/html
    not_found_ids: frozenset[int] = frozenset()  # /3/movie/{id} always 404
    fail_first: int = 0  # fail the first N attempts at each URL ...
    fail_mode: str = "503"  # ... this way (see FAIL_MODES)
    stall_s: float = 30.0  # how long a "stall" holds the request before answering
    kinds: frozenset[str] = frozenset({"api", "image", "thumbnail"})  # where transient faults apply

    def __post_init__(self) -> None:
        for name in ("bomb_ids", "malicious_path_ids", "wrong_type_ids", "not_found_ids", "kinds"):
            object.__setattr__(self, name, frozenset(getattr(self, name)))
        for name in ("share_429", "share_5xx", "share_drop", "share_corrupt", "share_truncated",
                     "share_no_trailer"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"faults.{name}: must be in [0, 1], got {value!r}")
        if self.share_429 + self.share_5xx + self.share_drop > 1.0 + 1e-9:
            raise ConfigError("faults: share_429 + share_5xx + share_drop must not exceed 1")
        if self.share_corrupt + self.share_truncated > 1.0 + 1e-9:
            raise ConfigError("faults: share_corrupt + share_truncated must not exceed 1")
        if self.latency < 0 or self.stall_s < 0:
            raise ConfigError("faults.latency and faults.stall_s: must be >= 0 seconds")
        if self.retry_after is not None and self.retry_after < 0:
            raise ConfigError(f"faults.retry_after: must be >= 0 seconds, got {self.retry_after!r}")
        if not (isinstance(self.fail_first, int) and self.fail_first >= 0):
            raise ConfigError(f"faults.fail_first: must be an integer >= 0, got {self.fail_first!r}")
        if self.fail_mode not in FAIL_MODES:
            raise ConfigError(f"faults.fail_mode: must be one of {', '.join(FAIL_MODES)}, got {self.fail_mode!r}")
        unknown = self.kinds - {"api", "image", "thumbnail"}
        if unknown:
            raise ConfigError(f"faults.kinds: unknown kinds {sorted(unknown)}; use api, image, thumbnail")


@dataclasses.dataclass(frozen=True)
class RecordedRequest:
    t: float  # time.monotonic() when the request arrived
    method: str
    path: str  # path and query, api_key redacted
    kind: str  # api | image | thumbnail | health | other
    status: int  # 0: the connection was dropped without an answer
    credentials: str | None  # "bearer" or "api_key" when the request carried one (valid or not)
    peer: str | None = None  # the client's host:port: one per TCP connection, so reuse shows


# ---- the server --------------------------------------------------------------------------------


def _draw(seed: int, tag: str, key: object) -> float:
    """A uniform [0, 1) number fixed by (seed, tag, key), the same in every process."""
    digest = hashlib.blake2b(f"{seed}:{tag}:{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def _fold(text: str) -> list[str]:
    """Lower-case words without accents or punctuation: how the search matches."""
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().casefold()
    return re.sub(r"[^a-z0-9]+", " ", text).split()


def _redact_query(path_qs: str) -> str:
    return re.sub(r"(?i)(api_key=)[^&]*", r"\g<1>***", path_qs)


class _Drop(Exception):
    """Raised by the fault layer to close the connection without a response."""


class FixtureServer:
    """The server. In sync tests: ``with FixtureServer(movies) as server: ...`` (a background
    thread); in async code: ``await server.start()`` / ``await server.stop()``.

    ``token`` / ``api_key``: the credentials /3/ endpoints accept; set both to None for no auth.
    """

    def __init__(self, catalogue: Iterable[FixtureMovie], *, faults: Faults | None = None,
                 token: str | None = DEFAULT_TOKEN, api_key: str | None = DEFAULT_API_KEY,
                 host: str = "127.0.0.1", port: int = 0, image_cache: int = 512,
                 request_log: int = 100_000):
        self.movies: dict[int, FixtureMovie] = {}
        for movie in catalogue:
            if movie.tmdb_id in self.movies:
                raise ConfigError(f"catalogue: tmdb_id {movie.tmdb_id} appears twice")
            self.movies[movie.tmdb_id] = movie
        self.faults = faults or Faults()
        self.token = token
        self.api_key = api_key
        self.host = host
        self.port = port
        self._by_key = {m.trailer_key: m for m in self.movies.values() if m.trailer_key}
        self._cache: collections.OrderedDict[tuple[str, int], bytes] = collections.OrderedDict()
        self._cache_size = image_cache
        # Bounded: a long-running CLI server must not grow without limit.
        self._requests: collections.deque[RecordedRequest] = collections.deque(maxlen=request_log)
        self._attempts: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def __repr__(self) -> str:
        where = self.url if self._runner is not None else "stopped"
        return f"FixtureServer({len(self.movies)} movies, {where})"

    # ---- addresses and the request log ----------------------------------------------------

    @property
    def url(self) -> str:
        if self._runner is None:
            raise ConfigError("FixtureServer: not started")
        return f"http://{self.host}:{self.port}"

    def client_urls(self) -> dict[str, str]:
        """ScrapeConfig keyword arguments (tmdb_api_url, tmdb_image_url, thumbnail_url) that point a client here."""
        return {"tmdb_api_url": self.url, "tmdb_image_url": f"{self.url}/t/p", "thumbnail_url": self.url}

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def clear_requests(self) -> None:
        with self._lock:
            self._requests.clear()
            self._attempts.clear()

    # ---- lifecycle --------------------------------------------------------------------------

    def make_app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware])
        app.router.add_get("/health", self._health)
        app.router.add_get("/3/configuration", self._configuration)
        app.router.add_get("/3/movie/{tmdb_id}", self._movie)
        app.router.add_get("/3/search/movie", self._search)
        app.router.add_get("/t/p/{size}/{file}", self._poster)
        app.router.add_get("/vi/{key}/hqdefault.jpg", self._thumbnail)
        return app

    async def start(self) -> str:
        # access_log=None: aiohttp's access log prints the query string, api_key included.
        # shutdown_timeout: a stalled request (fault mode "stall") must not hold stop() for 60 s.
        runner = web.AppRunner(self.make_app(), access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise ConfigError(f"fixture server: cannot listen on {self.host}:{self.port} ({exc})") from exc
        self._runner = runner
        self.port = int(runner.addresses[0][1])
        log.info("TMDB fixture serving %d movies at %s", len(self.movies), self.url)
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    def __enter__(self) -> FixtureServer:
        ready = threading.Event()
        failure: list[BaseException] = []

        def serve() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self.start())
            except BaseException as exc:  # noqa: BLE001 - handed to the starting thread
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(self.stop())
                loop.close()

        self._thread = threading.Thread(target=serve, name="tmdb-fixture", daemon=True)
        self._thread.start()
        ready.wait(30)
        if failure:
            raise failure[0]
        if not ready.is_set():
            raise ConfigError("fixture server: did not start within 30 s")
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(30)
        self._thread = self._loop = None

    # ---- request handling ---------------------------------------------------------------------

    def _record(self, request: web.Request, kind: str, status: int, started: float, creds: str | None) -> None:
        with self._lock:
            peer = request.transport.get_extra_info("peername") if request.transport is not None else None
            self._requests.append(RecordedRequest(started, request.method, _redact_query(request.path_qs),
                                                  kind, status, creds, None if not peer else f"{peer[0]}:{peer[1]}"))

    @staticmethod
    def _kind(path: str) -> str:
        if path.startswith("/3/"):
            return "api"
        if path.startswith("/t/p/"):
            return "image"
        if path.startswith("/vi/"):
            return "thumbnail"
        return "health" if path == "/health" else "other"

    def _credentials(self, request: web.Request) -> tuple[str | None, bool]:
        """(which credential the request carried, whether it is accepted)."""
        header = request.headers.get("Authorization", "")
        key = request.query.get("api_key")
        if header:
            scheme, _, value = header.partition(" ")
            ok = scheme.lower() == "bearer" and self.token is not None and value == self.token
            return "bearer", ok
        if key is not None:
            return "api_key", self.api_key is not None and key == self.api_key
        return None, self.token is None and self.api_key is None

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Callable) -> web.StreamResponse:
        started = time.monotonic()
        kind = self._kind(request.path)
        creds, accepted = self._credentials(request)
        status = 0
        try:
            if kind == "health":
                response = await handler(request)
                status = response.status
                return response
            if self.faults.latency:
                await asyncio.sleep(self.faults.latency)
            if kind == "api" and not accepted:
                status = 401
                return web.json_response({"status_code": 7, "success": False,
                                          "status_message": "Invalid API key: You must be granted a valid key."},
                                         status=401)
            fault = self._transient_fault(request, kind)
            if fault is not None:
                response = await fault
                status = response.status
                return response
            try:
                response = await handler(request)
            except web.HTTPException as exc:
                status = exc.status
                raise
            status = response.status
            return response
        except _Drop:
            # Abort, not close: the client must see the connection vanish with no answer at all.
            if request.transport is not None:
                request.transport.abort()
            raise asyncio.CancelledError from None
        finally:
            self._record(request, kind, status, started, creds)

    def _transient_fault(self, request: web.Request, kind: str) -> Awaitable[web.StreamResponse] | None:
        faults = self.faults
        if kind not in faults.kinds:
            return None
        url_key = _redact_query(request.path_qs)
        with self._lock:
            n = self._attempts[url_key]
            self._attempts[url_key] += 1
        if n < faults.fail_first:
            mode = faults.fail_mode
        else:
            u = _draw(faults.seed, "transient", f"{url_key}#{n}")
            if u < faults.share_429:
                mode = "429"
            elif u < faults.share_429 + faults.share_5xx:
                mode = ("500", "502", "503", "504")[int(_draw(faults.seed, "5xx", f"{url_key}#{n}") * 4)]
            elif u < faults.share_429 + faults.share_5xx + faults.share_drop:
                mode = "drop"
            else:
                return None
        return self._fail(mode)

    async def _fail(self, mode: str) -> web.StreamResponse:
        if mode == "drop":
            raise _Drop
        if mode == "stall":
            await asyncio.sleep(self.faults.stall_s)
            return web.json_response({"status_code": 24, "status_message": "Your request to the backend "
                                      "server timed out. Try again."}, status=504)
        status = int(mode)
        headers = {}
        if status in (429, 503) and self.faults.retry_after is not None:
            value = self.faults.retry_after
            headers["Retry-After"] = str(int(value)) if float(value).is_integer() else f"{value:g}"
        message = ("Your request count is over the allowed limit." if status == 429
                   else "Internal error: Something went wrong, contact TMDB.")
        return web.json_response({"status_code": 25 if status == 429 else 11, "status_message": message},
                                 status=status, headers=headers)

    async def _content(self, kind: str, movie: FixtureMovie, make: Callable[[], bytes]) -> bytes:
        key = (kind, movie.tmdb_id)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        # Rendering can take milliseconds; keep the event loop answering meanwhile.
        data = await asyncio.get_running_loop().run_in_executor(None, make)
        with self._lock:
            self._cache[key] = data
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return data

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "movies": len(self.movies)})

    @staticmethod
    def _not_found() -> web.Response:
        return web.json_response({"success": False, "status_code": 34,
                                  "status_message": "The resource you requested could not be found."},
                                 status=404)

    def _has_trailer(self, movie: FixtureMovie) -> bool:
        return bool(movie.trailer_key) and _draw(self.faults.seed, "no_trailer", movie.tmdb_id) >= \
            self.faults.share_no_trailer

    def _videos(self, movie: FixtureMovie) -> list[dict]:
        # Decoys around the real trailer: a Vimeo trailer published first (a client that ignores
        # `site` picks it), a YouTube featurette and an older teaser whose thumbnails do not exist.
        year = movie.year or 2000
        videos = [{"iso_639_1": "en", "iso_3166_1": "US", "name": "Trailer (Vimeo)",
                   "key": str(100000000 + movie.tmdb_id), "site": "Vimeo", "size": 1080, "type": "Trailer",
                   "official": True, "published_at": f"{year - 1}-01-01T00:00:00.000Z", "id": f"v{movie.tmdb_id}"}]
        if not self._has_trailer(movie):
            return videos
        for tag, kind, name, month in (("featurette", "Featurette", "Behind the Scenes", "02"),
                                       ("teaser", "Teaser", "Teaser", "03")):
            videos.append({"iso_639_1": "en", "iso_3166_1": "US", "name": name,
                           "key": youtube_key(movie.tmdb_id, self.faults.seed, tag), "site": "YouTube",
                           "size": 1080, "type": kind, "official": True,
                           "published_at": f"{year - 1}-{month}-01T00:00:00.000Z", "id": f"{tag[0]}{movie.tmdb_id}"})
        videos.append({"iso_639_1": "en", "iso_3166_1": "US", "name": "Official Trailer", "key": movie.trailer_key,
                       "site": "YouTube", "size": 1080, "type": "Trailer", "official": True,
                       "published_at": f"{year - 1}-06-01T00:00:00.000Z", "id": f"t{movie.tmdb_id}"})
        return videos

    @staticmethod
    def _genres(names: Iterable[str]) -> list[dict]:
        out, seen = [], set()
        for name in names:
            gid, tmdb_name = TMDB_GENRES.get(name, (zlib.crc32(name.encode()) % 90000 + 10000, name))
            if gid not in seen:
                seen.add(gid)
                out.append({"id": gid, "name": tmdb_name})
        return out

    async def _configuration(self, request: web.Request) -> web.Response:
        base = f"{request.scheme}://{request.host}/t/p/"
        return web.json_response({"images": {"base_url": base, "secure_base_url": base,
                                             "poster_sizes": ["w92", "w185", "w342", "w500", "w780", "original"]},
                                  "change_keys": []})

    async def _movie(self, request: web.Request) -> web.Response:
        try:
            tmdb_id = int(request.match_info["tmdb_id"])
        except ValueError:
            return self._not_found()
        movie = self.movies.get(tmdb_id)
        if movie is None or tmdb_id in self.faults.not_found_ids:
            return self._not_found()
        overview = movie.overview() if callable(movie.overview) else movie.overview
        poster_path = movie.poster_path
        if tmdb_id in self.faults.malicious_path_ids:
            poster_path = MALICIOUS_POSTER_PATHS[tmdb_id % len(MALICIOUS_POSTER_PATHS)]
        body: dict[str, Any] = {
            "adult": False, "id": tmdb_id, "title": movie.title, "original_title": movie.original_title or movie.title,
            "overview": overview, "poster_path": poster_path,
            "release_date": f"{movie.year}-01-01" if movie.year else "", "genres": self._genres(movie.genres),
        }
        appended = {part.strip() for part in request.query.get("append_to_response", "").split(",")}
        if "videos" in appended:
            body["videos"] = {"results": self._videos(movie)}
        return web.json_response(body)

    async def _search(self, request: web.Request) -> web.Response:
        words = _fold(request.query.get("query", ""))
        year_text = request.query.get("year")
        try:
            year = int(year_text) if year_text else None
        except ValueError:
            return web.json_response({"status_code": 22, "status_message": "Invalid year."}, status=422)
        hits = []
        if words:
            for movie in self.movies.values():
                if year is not None and movie.year != year:
                    continue
                titles = [_fold(movie.title), _fold(movie.original_title or "")]
                if not any(all(w in t for w in words) for t in titles):
                    continue
                exact = any(t == words for t in titles)
                hits.append((not exact, movie.tmdb_id, movie))
        hits.sort(key=lambda h: h[:2])
        results = []
        for _, _, movie in hits[:20]:
            overview = movie.overview() if callable(movie.overview) else movie.overview
            results.append({"adult": False, "id": movie.tmdb_id, "title": movie.title,
                            "original_title": movie.original_title or movie.title,
                            "release_date": f"{movie.year}-01-01" if movie.year else "",
                            "overview": overview, "poster_path": movie.poster_path,
                            "genre_ids": [g["id"] for g in self._genres(movie.genres)]})
        return web.json_response({"page": 1, "results": results, "total_results": len(hits),
                                  "total_pages": 1 if hits else 0})

    async def _poster(self, request: web.Request) -> web.Response:
        match = _POSTER_FILE.fullmatch(request.match_info["file"])
        movie = self.movies.get(int(match.group(1))) if match else None
        if movie is None or movie.poster is None:
            return web.Response(status=404, text="Not Found")
        faults = self.faults
        if movie.tmdb_id in faults.bomb_ids:
            return web.Response(body=bomb_png(), content_type="image/png")
        data = self._spoil("poster", movie.tmdb_id, await self._content("poster", movie, movie.poster))
        if movie.tmdb_id in faults.wrong_type_ids:
            return web.Response(body=data, content_type="text/html")
        return web.Response(body=data, content_type="image/jpeg")

    async def _thumbnail(self, request: web.Request) -> web.Response:
        movie = self._by_key.get(request.match_info["key"])
        if movie is None or movie.thumbnail is None or not self._has_trailer(movie):
            return web.Response(status=404, body=placeholder_jpeg(), content_type="image/jpeg")
        data = self._spoil("thumbnail", movie.tmdb_id, await self._content("thumbnail", movie, movie.thumbnail))
        return web.Response(body=data, content_type="image/jpeg")

    def _spoil(self, kind: str, tmdb_id: int, data: bytes) -> bytes:
        u = _draw(self.faults.seed, "content", f"{kind}:{tmdb_id}")
        if u < self.faults.share_corrupt:
            return corrupt(data)
        if u < self.faults.share_corrupt + self.faults.share_truncated:
            return truncate(data)
        return data


def parse_ids(text: str | None) -> frozenset[int]:
    """'1,2,5-7' -> {1, 2, 5, 6, 7}; for command-line id lists."""
    ids: set[int] = set()
    for part in (text or "").split(","):
        part = part.strip()
        if not part:
            continue
        try:
            if "-" in part:
                lo, hi = (int(x) for x in part.split("-", 1))
                ids.update(range(lo, hi + 1))
            else:
                ids.add(int(part))
        except ValueError:
            raise ConfigError(f"id list: {part!r} is not an id or a lo-hi range") from None
    return frozenset(ids)


def faults_json(faults: Faults) -> str:
    """The faults as one JSON line, for logs."""
    data = dataclasses.asdict(faults)
    return json.dumps({k: sorted(v) if isinstance(v, frozenset) else v for k, v in data.items()})
