"""Async TMDB client: movie metadata, posters and YouTube trailer thumbnails, one row per movie.

Plain aiohttp, no Ray: a Ray Data actor owns one client and gives it ``rate / n_actors`` so the
fleet as a whole stays under TMDB's limit. Every request (API, poster CDN, thumbnail host) goes
through one token bucket, is retried on transient failures with capped, fully jittered
exponential backoff (``Retry-After`` wins when the server sends it), and its body is read with a
size cap. Everything the server sends is data: poster paths and trailer keys are allow-listed
before they become URLs, and images are checked (type, size, declared pixels, full decode)
before they are kept.

The credential is sent only to ``api_url`` (never to the image or thumbnail hosts) and never
appears in logs, errors, rows or reprs: URLs are redacted before they are logged or quoted.
"""

from __future__ import annotations

import asyncio
import dataclasses
import email.utils
import io
import json
import logging
import random
import re
import time
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp
from yarl import URL

from armor.config import ScrapeConfig
from armor.errors import ArmorError, ConfigError

log = logging.getLogger(__name__)

DEFAULT_API_URL = "https://api.themoviedb.org"
DEFAULT_IMAGE_URL = "https://image.tmdb.org/t/p"
DEFAULT_THUMBNAIL_URL = "https://img.youtube.com"
TOKEN_ENV = "TMDB_API_TOKEN"
API_KEY_ENV = "TMDB_API_KEY"

# Row statuses. `failed` rows are worth retrying (transient trouble or bad metadata); the others
# are final answers about the movie.
STATUSES = ("ok", "no_poster", "no_trailer", "not_found", "failed")

# fullmatch, not `$`: `$` also matches before a trailing newline.
POSTER_PATH_RE = re.compile(r"/[A-Za-z0-9_-]+\.(?:jpg|jpeg|png|webp)", re.IGNORECASE)
TRAILER_KEY_RE = re.compile(r"[A-Za-z0-9_-]{6,20}")
# Pillow plugins we let parse untrusted bytes; TMDB serves JPEG/PNG, YouTube JPEG/WebP.
IMAGE_FORMATS = ("JPEG", "PNG", "WEBP")

_API_KEY_IN_TEXT = re.compile(r"(?i)(api_key=)[^&#\s'\"]*")
_REDACTED = "***"


class TMDBError(ArmorError):
    """A TMDB request could not be completed."""


class AuthError(TMDBError):
    """Credentials are missing or TMDB rejected them (HTTP 401). Never retried."""


class TMDBRequestError(TMDBError):
    """A request failed for good: retries exhausted, an unexpected status, or an oversized body.

    ``transient`` is True when the cause was temporary (429, 5xx, timeouts, dropped connections),
    so a later run may succeed.
    """

    def __init__(self, message: str, *, status: int | None = None, attempts: int = 0,
                 transient: bool = False):
        super().__init__(message)
        self.status = status
        self.attempts = attempts
        self.transient = transient


def redact_url(url: str | URL) -> str:
    """The URL as text with any ``api_key`` query value replaced by ``***``."""
    return _API_KEY_IN_TEXT.sub(r"\g<1>" + _REDACTED, str(url))


@dataclasses.dataclass(frozen=True)
class Credentials:
    """A v4 bearer token or a v3 API key. The repr names the kind only."""

    token: str | None = dataclasses.field(default=None, repr=False)
    api_key: str | None = dataclasses.field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not self.token and not self.api_key:
            raise AuthError(f"no TMDB credentials: set {TOKEN_ENV} (v4 read access token) or "
                            f"{API_KEY_ENV} (v3 API key), or pass token= / api_key= to Credentials.resolve")

    @classmethod
    def resolve(cls, token: str | None = None, api_key: str | None = None, *,
                environ: Mapping[str, str]) -> Credentials:
        """Explicit arguments win over ``environ`` (TMDB_API_TOKEN, then TMDB_API_KEY); a token wins over a key.

        ``environ`` is the caller's to give (the command line passes ``os.environ``): the
        library reads no environment of its own.
        """
        token = (token or "").strip() or None
        api_key = (api_key or "").strip() or None
        if token or api_key:
            return cls(token=token, api_key=None if token else api_key)
        token = (environ.get(TOKEN_ENV) or "").strip() or None
        api_key = (environ.get(API_KEY_ENV) or "").strip() or None
        return cls(token=token, api_key=None if token else api_key)

    @property
    def mode(self) -> str:
        return "bearer" if self.token else "api_key"

    def redact(self, text: str) -> str:
        text = _API_KEY_IN_TEXT.sub(r"\g<1>" + _REDACTED, text)
        for secret in (self.token, self.api_key):
            if secret:
                text = text.replace(secret, _REDACTED)
        return text

    def __str__(self) -> str:
        return repr(self)

    def __repr__(self) -> str:
        return f"Credentials(mode={self.mode!r})"


class RateLimiter:
    """Token bucket: ``rate`` requests per second on average, at most ``burst`` at once.

    In any window of T seconds at most ``burst + rate * T`` requests pass. Waiters queue on an
    asyncio lock and are served in arrival order. Share one instance between clients (of one
    event loop) to give them a common budget.
    """

    def __init__(self, rate: float = 40.0, burst: int | None = None, *,
                 clock: Callable[[], float] = time.monotonic):
        if not rate > 0:
            raise ConfigError(f"rate: must be > 0 requests per second, got {rate!r}")
        if burst is None:
            # A quarter of a second's worth: smooth enough for TMDB, and at least one token.
            burst = max(1, round(rate / 4))
        if not (isinstance(burst, int) and burst >= 1):
            raise ConfigError(f"burst: must be an integer >= 1, got {burst!r}")
        self.rate = float(rate)
        self.burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._last: float | None = None
        self._lock: asyncio.Lock | None = None
        self._lock_loop: asyncio.AbstractEventLoop | None = None

    def __repr__(self) -> str:
        return f"RateLimiter(rate={self.rate:g}/s, burst={self.burst})"

    def _refill(self) -> None:
        now = self._clock()
        if self._last is not None:
            self._tokens = min(float(self.burst), self._tokens + (now - self._last) * self.rate)
        self._last = now

    async def acquire(self) -> float:
        """Wait for a token; returns the seconds waited."""
        loop = asyncio.get_running_loop()
        if self._lock is None or self._lock_loop is not loop:
            # A lock is bound to the loop that first waits on it; asyncio.run() makes new loops.
            self._lock, self._lock_loop = asyncio.Lock(), loop
        started = self._clock()
        async with self._lock:
            self._refill()
            # Loop: the event loop may wake a sleeper up to its clock resolution early.
            while self._tokens < 1.0:
                await asyncio.sleep((1.0 - self._tokens) / self.rate)
                self._refill()
            self._tokens -= 1.0
        return self._clock() - started


@dataclasses.dataclass
class ClientStats:
    """What a client did: HTTP attempts, retries, outcomes and throughput."""

    requests: int = 0  # HTTP attempts sent, retries included
    retries: int = 0
    by_status: dict[int, int] = dataclasses.field(default_factory=dict)
    errors: dict[str, int] = dataclasses.field(default_factory=dict)  # transport failures by type
    bytes_received: int = 0
    rate_wait_s: float = 0.0
    started: float = dataclasses.field(default_factory=time.monotonic)

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    @property
    def requests_per_second(self) -> float:
        elapsed = self.elapsed
        return self.requests / elapsed if elapsed > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"requests": self.requests, "retries": self.retries,
                "by_status": dict(sorted(self.by_status.items())), "errors": dict(self.errors),
                "bytes_received": self.bytes_received, "rate_wait_s": round(self.rate_wait_s, 3),
                "elapsed_s": round(self.elapsed, 3),
                "requests_per_second": round(self.requests_per_second, 2)}


@dataclasses.dataclass(frozen=True)
class _Reply:
    status: int
    content_type: str
    body: bytes


class _BodyTooLarge(Exception):
    pass


_TRANSPORT_ERRORS = (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, asyncio.TimeoutError)


def check_image(body: bytes, content_type: str | None, *, max_bytes: int = 10 * 2**20,
                max_pixels: int = 40_000_000) -> str | None:
    """Why ``body`` is not an image to keep, or None when it is.

    The pixel count is read from the header and checked before anything is decoded, so a small
    file that declares a huge canvas (a decompression bomb) costs nothing. Then the whole image
    is decoded, which catches truncated and corrupt files.
    """
    from PIL import Image

    kind = (content_type or "").split(";", 1)[0].strip().lower()
    if not kind.startswith("image/"):
        return f"content type {kind or 'missing'!r} is not image/*"
    if not body:
        return "empty body"
    if len(body) > max_bytes:
        return f"{len(body)} bytes, over the cap of {max_bytes}"
    # Broad excepts below: Pillow raises many exception types on hostile input
    # (SyntaxError, struct.error, IndexError, ...), and any of them means "not an image".
    try:
        image = Image.open(io.BytesIO(body), formats=IMAGE_FORMATS)
    except Image.DecompressionBombError as exc:
        return f"declares too many pixels ({exc})"
    except Exception as exc:  # noqa: BLE001
        return f"not a readable {'/'.join(IMAGE_FORMATS)} image ({type(exc).__name__})"
    with image:
        width, height = image.size
        if width <= 0 or height <= 0 or width * height > max_pixels:
            return f"declares {width}x{height} pixels, over the cap of {max_pixels}"
        try:
            image.load()
        except Exception as exc:  # noqa: BLE001
            return f"{image.format} does not decode ({type(exc).__name__}: {str(exc)[:120]})"
    return None


def pick_trailer_key(videos: Any) -> tuple[str | None, str | None]:
    """(YouTube key, None) for the best trailer in TMDB's ``videos`` object, or (None, why not).

    Preference: official Trailer, Trailer, official Teaser, Teaser; among equals the earliest
    ``published_at``, then the key, so the choice does not depend on TMDB's list order.
    Keys that are not YouTube-shaped are skipped.
    """
    results = videos.get("results") if isinstance(videos, dict) else None
    if not isinstance(results, list):
        return None, "no videos"
    ranked = []
    for video in results:
        if not isinstance(video, dict) or str(video.get("site", "")).lower() != "youtube":
            continue
        kind = video.get("type")
        if kind not in ("Trailer", "Teaser"):
            continue
        official = video.get("official") is True
        rank = (0 if kind == "Trailer" else 2) + (0 if official else 1)
        ranked.append((rank, str(video.get("published_at") or ""), str(video.get("key") or "")))
    if not ranked:
        return None, "no YouTube trailer or teaser"
    rejected = []
    for _, _, key in sorted(ranked):
        if TRAILER_KEY_RE.fullmatch(key):
            return key, None
        rejected.append(key[:40])
    return None, f"rejected trailer keys {rejected!r}: not YouTube video ids"


def _retry_after_seconds(value: str | None) -> float | None:
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when is None:
            return None
        seconds = when.timestamp() - time.time()
    if seconds != seconds:  # NaN
        return None
    return max(0.0, seconds)


def no_silent_resend(session: aiohttp.ClientSession) -> None:
    """aiohttp (3.10+) resends an idempotent request once by itself when the server drops the connection,
    skipping the rate limiter and the attempt count: leave retries to ``TMDBClient._get``. No public switch
    exists (aiohttp's own test client sets this attribute too); tests/unit/test_tmdb_client.py fails if it moves."""
    if hasattr(session, "_retry_connection"):
        session._retry_connection = False
    else:
        log.warning("aiohttp %s: no ClientSession._retry_connection; a dropped request may be resent unmetered",
                    aiohttp.__version__)


class TMDBClient:
    """``async with TMDBClient(config, credentials) as client: row = await client.fetch_movie_row(1, 862)``.

    ``config`` (a validated ScrapeConfig) holds the URLs, limits, timeouts and retry policy.
    ``credentials``: a v4 token (sent as a bearer header) or a v3 API key (a query parameter),
    resolved by the caller, e.g. ``Credentials.resolve(environ=os.environ)``. ``rate_limiter``:
    share one between clients to give them a common budget; by default the client gets its own
    at ``config.rate_limit`` and ``config.burst``.
    """

    def __init__(self, config: ScrapeConfig, credentials: Credentials, *, rate_limiter: RateLimiter | None = None):
        self.config = config
        self._credentials = credentials
        self.api_url = URL(config.tmdb_api_url.rstrip("/"))
        self.image_url = config.tmdb_image_url.rstrip("/")
        self.thumbnail_url = config.thumbnail_url.rstrip("/")
        self.limiter = rate_limiter if rate_limiter is not None else RateLimiter(config.rate_limit, config.burst)
        self.timeout = aiohttp.ClientTimeout(total=config.total_timeout, connect=config.connect_timeout)
        self.stats = ClientStats()
        self._rng = random.Random(config.seed)
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:
        return (f"TMDBClient(api_url={str(self.api_url)!r}, auth={self._credentials.mode!r}, "
                f"limiter={self.limiter!r}, max_attempts={self.config.max_attempts})")

    __str__ = __repr__

    # ---- lifecycle --------------------------------------------------------------------------

    async def __aenter__(self) -> TMDBClient:
        self._ensure_session()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def _ensure_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            limit = self.config.max_connections
            connector = aiohttp.TCPConnector(limit=limit, limit_per_host=limit)
            self._session = aiohttp.ClientSession(connector=connector, timeout=self.timeout,
                                                  headers={"User-Agent": "armor-recsys/0.1"})
            no_silent_resend(self._session)
        return self._session

    async def close(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None

    # ---- public API -------------------------------------------------------------------------

    async def check_credentials(self) -> None:
        """One ``/3/configuration`` request: raises AuthError now rather than in every worker later."""
        reply = await self._get("configuration", self._api("configuration"), [0], cap=self.config.max_json_bytes,
                                api=True)
        if reply.status != 200:
            raise TMDBRequestError(f"configuration: HTTP {reply.status}", status=reply.status)

    async def search_movie(self, query: str, year: int | None = None) -> list[dict]:
        """TMDB's ``/3/search/movie`` results (first page): dicts with id, title, release_date, ..."""
        if not isinstance(query, str) or not query.strip():
            raise TMDBError(f"search query must be a non-empty string, got {query!r}")
        params = {"query": query.strip(), "include_adult": "false", "page": "1"}
        if year is not None:
            params["year"] = str(int(year))
        reply = await self._get("search", self._api("search", "movie", **params), [0],
                                cap=self.config.max_json_bytes, api=True)
        if reply.status != 200:
            raise TMDBRequestError(f"search {query!r}: HTTP {reply.status}", status=reply.status)
        data = self._json(reply.body)
        results = data.get("results") if isinstance(data, dict) else None
        if not isinstance(results, list):
            raise TMDBRequestError(f"search {query!r}: response has no results list")
        return [r for r in results if isinstance(r, dict) and isinstance(r.get("id"), int)]

    async def fetch_movie_row(self, movie_id: int, tmdb_id: int) -> dict:
        """Metadata, poster and trailer thumbnail of one movie, as a row; see STATUSES.

        Raises only AuthError (every other request would fail the same way); every other
        problem is recorded in the row's ``status`` and ``error``.
        """
        row: dict[str, Any] = {
            "movie_id": int(movie_id), "tmdb_id": int(tmdb_id), "status": "failed", "title": None,
            "overview": None, "release_date": None, "genres": [], "poster_path": None, "poster": None,
            "trailer_key": None, "thumbnail": None, "error": None, "attempts": 0,
        }
        attempts = [0]
        errors: list[str] = []

        def finish(status: str) -> dict:
            row["status"] = status
            row["attempts"] = attempts[0]
            row["error"] = self._credentials.redact("; ".join(errors)) if errors else None
            return row

        data = await self._movie_details(tmdb_id, attempts, errors)
        if isinstance(data, str):
            return finish(data)
        for field in ("title", "overview", "release_date"):
            value = data.get(field)
            row[field] = value if isinstance(value, str) and value else None
        genres = data.get("genres")
        if isinstance(genres, list):
            row["genres"] = [g["name"] for g in genres if isinstance(g, dict) and isinstance(g.get("name"), str)]

        if await self._fetch_media(row, data, attempts, errors):
            return finish("failed")
        if row["poster"] is None:
            return finish("no_poster")
        if row["thumbnail"] is None:
            return finish("no_trailer")
        return finish("ok")

    async def _movie_details(self, tmdb_id: int, attempts: list[int], errors: list[str]) -> dict | str:
        """TMDB's JSON object for the movie (videos appended), else the row's status, its cause in ``errors``."""
        if int(tmdb_id) <= 0:
            errors.append(f"tmdb_id {tmdb_id} is not a positive integer")
            return "failed"
        try:
            reply = await self._get("movie", self._api("movie", str(int(tmdb_id)), append_to_response="videos"),
                                    attempts, cap=self.config.max_json_bytes, api=True)
        except TMDBRequestError as exc:
            errors.append(str(exc))
            return "failed"
        if reply.status == 404:
            errors.append(f"TMDB has no movie {tmdb_id} (HTTP 404)")
            return "not_found"
        if reply.status != 200:
            errors.append(f"movie {tmdb_id}: HTTP {reply.status}")
            return "failed"
        try:
            data = self._json(reply.body)
        except TMDBRequestError as exc:
            errors.append(f"movie {tmdb_id}: {exc}")
            return "failed"
        if not isinstance(data, dict):
            errors.append(f"movie {tmdb_id}: response is not a JSON object")
            return "failed"
        return data

    async def _fetch_media(self, row: dict[str, Any], data: dict, attempts: list[int], errors: list[str]) -> bool:
        """Fill the row's poster and thumbnail from the movie's JSON; True when either failed transiently."""
        transient = False
        poster_path = data.get("poster_path")
        if not poster_path:
            errors.append("no poster_path")
        elif not (isinstance(poster_path, str) and POSTER_PATH_RE.fullmatch(poster_path)):
            errors.append(f"rejected poster_path {str(poster_path)[:80]!r}: not a plain image file name")
        else:
            row["poster_path"] = poster_path
            url = URL(f"{self.image_url}/{self.config.poster_size}{poster_path}", encoded=True)
            row["poster"], why, failed = await self._fetch_image("poster", url, attempts)
            transient |= failed
            if why:
                errors.append(f"poster: {why}")

        key, why = pick_trailer_key(data.get("videos"))
        if key is None:
            errors.append(f"trailer: {why}")
        else:
            row["trailer_key"] = key
            url = URL(f"{self.thumbnail_url}/vi/{key}/hqdefault.jpg", encoded=True)
            row["thumbnail"], why, failed = await self._fetch_image("thumbnail", url, attempts)
            transient |= failed
            if why:
                errors.append(f"thumbnail: {why}")
        return transient

    # ---- internals --------------------------------------------------------------------------

    def _api(self, *segments: str, **params: str) -> URL:
        url = self.api_url.joinpath("3", *segments)
        if self.config.language:
            params.setdefault("language", self.config.language)
        if self._credentials.mode == "api_key":
            params["api_key"] = self._credentials.api_key or ""
        return url.with_query(params) if params else url

    def _json(self, body: bytes) -> Any:
        try:
            return json.loads(body)
        except (UnicodeDecodeError, ValueError) as exc:
            raise TMDBRequestError(f"invalid JSON ({type(exc).__name__})") from None

    async def _fetch_image(self, kind: str, url: URL, attempts: list[int]) -> tuple[bytes | None, str | None, bool]:
        """(bytes, None, False) for a good image, else (None, why, whether the cause was transient)."""
        try:
            reply = await self._get(kind, url, attempts, cap=self.config.max_image_bytes, api=False)
        except TMDBRequestError as exc:
            return None, str(exc), exc.transient
        if reply.status == 404:
            # YouTube answers a missing thumbnail with 404 and a grey placeholder JPEG: missing.
            return None, "missing (HTTP 404)", False
        if reply.status != 200:
            return None, f"HTTP {reply.status}", False
        why = await asyncio.to_thread(check_image, reply.body, reply.content_type,
                                      max_bytes=self.config.max_image_bytes, max_pixels=self.config.max_image_pixels)
        if why is not None:
            log.debug("%s %s rejected: %s", kind, redact_url(url), why)
            return None, f"invalid image: {why}", False
        return reply.body, None, False

    def _backoff(self, attempt: int) -> float:
        # Full jitter: spreads out a fleet of clients that failed at the same moment.
        return self._rng.uniform(0.0, min(self.config.backoff_cap, self.config.backoff_base * 2 ** (attempt - 1)))

    async def _get(self, kind: str, url: URL, attempts: list[int], *, cap: int, api: bool) -> _Reply:
        session = self._ensure_session()
        headers = {"Accept": "application/json" if api else "image/*"}
        if api and self._credentials.mode == "bearer":
            headers["Authorization"] = f"Bearer {self._credentials.token}"
        shown = self._credentials.redact(redact_url(url))
        last = ""
        for attempt in range(1, self.config.max_attempts + 1):
            self.stats.rate_wait_s += await self.limiter.acquire()
            self.stats.requests += 1
            attempts[0] += 1
            delay: float | None = None
            started = time.monotonic()
            try:
                # No redirects for the API: a redirect must not carry the credential elsewhere.
                async with session.get(url, headers=headers, allow_redirects=not api, max_redirects=3) as resp:
                    status = resp.status
                    self.stats.by_status[status] = self.stats.by_status.get(status, 0) + 1
                    if status == 429 or 500 <= status <= 599:
                        last = f"HTTP {status}"
                        if status in (429, 503):
                            retry_after = _retry_after_seconds(resp.headers.get("Retry-After"))
                            if retry_after is not None:
                                delay = min(retry_after, self.config.retry_after_cap)
                    elif status == 401 and api:
                        raise AuthError(f"TMDB rejected the credentials (HTTP 401) on a {kind} request: set "
                                        f"{TOKEN_ENV} (v4 read access token) or {API_KEY_ENV} (v3 API key) "
                                        "to a valid value")
                    else:
                        body = await self._read_capped(resp, cap)
                        self.stats.bytes_received += len(body)
                        log.debug("GET %s -> %d, %d bytes, %.3fs", shown, status, len(body),
                                  time.monotonic() - started)
                        return _Reply(status, resp.headers.get("Content-Type", ""), body)
            except _BodyTooLarge:
                raise TMDBRequestError(f"{kind} {shown}: body over the cap of {cap} bytes",
                                       attempts=attempt) from None
            except _TRANSPORT_ERRORS as exc:
                name = type(exc).__name__
                self.stats.errors[name] = self.stats.errors.get(name, 0) + 1
                last = name
            except aiohttp.ClientError as exc:
                # Not transient (too many redirects, a malformed response): retrying will not help.
                # The exception's text can quote the URL, so only its type is kept.
                name = type(exc).__name__
                self.stats.errors[name] = self.stats.errors.get(name, 0) + 1
                raise TMDBRequestError(f"{kind} {shown}: {name}", attempts=attempt) from None
            if attempt == self.config.max_attempts:
                break
            if delay is None:
                delay = self._backoff(attempt)
            self.stats.retries += 1
            log.debug("GET %s: %s, retry %d/%d in %.2fs", shown, last, attempt, self.config.max_attempts - 1, delay)
            await asyncio.sleep(delay)
        log.info("GET %s: giving up after %d attempts (last: %s)", shown, self.config.max_attempts, last)
        raise TMDBRequestError(f"{kind} {shown}: gave up after {self.config.max_attempts} attempts (last: {last})",
                               attempts=self.config.max_attempts, transient=True)

    @staticmethod
    async def _read_capped(resp: aiohttp.ClientResponse, cap: int) -> bytes:
        if resp.content_length is not None and resp.content_length > cap:
            raise _BodyTooLarge
        chunks, total = [], 0
        async for chunk in resp.content.iter_chunked(64 * 1024):
            total += len(chunk)
            if total > cap:
                raise _BodyTooLarge
            chunks.append(chunk)
        return b"".join(chunks)
