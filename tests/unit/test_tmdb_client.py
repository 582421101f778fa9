"""TMDBClient against the local fixture server (127.0.0.1 only), faults injected."""

from __future__ import annotations

import asyncio
import io
import logging
import random
import time
import traceback
from collections import Counter

import pytest
from PIL import Image, ImageFile

from armor.config import ScrapeConfig
from armor.errors import ArmorError, ConfigError
from armor.tmdb.client import (
    POSTER_PATH_RE,
    AuthError,
    Credentials,
    RateLimiter,
    TMDBClient,
    check_image,
    no_silent_resend,
    pick_trailer_key,
    redact_url,
)
from armor.tmdb.fixture import MALICIOUS_POSTER_PATHS, Faults, FixtureServer
from armor.tmdb.standin import FixtureMovie, bomb_png, corrupt, placeholder_jpeg, truncate

pytestmark = pytest.mark.network

# Distinctive fake secrets: any appearance outside the request that carries them is a leak.
TOKEN = "tok-SECRET-7f3a9c1e-DO-NOT-LEAK"
API_KEY = "key-SECRET-b41e2d07-DO-NOT-LEAK"


def jpeg(size: tuple[int, int], colour: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def make_movie(tmdb_id: int, *, poster: bool = True, thumbnail: bool = True, trailer: bool = True) -> FixtureMovie:
    colour = (tmdb_id * 37 % 256, tmdb_id * 91 % 256, 120)
    return FixtureMovie(
        tmdb_id=tmdb_id, title=f"Movie {tmdb_id}", year=1990 + tmdb_id % 20, genres=("Drama", "Sci-Fi"),
        overview=f"Overview of movie {tmdb_id}.",
        poster=(lambda: jpeg((40, 60), colour)) if poster else None,
        thumbnail=(lambda: jpeg((48, 36), colour)) if thumbnail else None,
        trailer_key=f"trailer{tmdb_id:05d}" if trailer else None)


def catalogue(n: int = 6) -> list[FixtureMovie]:
    return [make_movie(i) for i in range(1, n + 1)]


def serve(movies=None, **faults) -> FixtureServer:
    return FixtureServer(catalogue() if movies is None else movies, faults=Faults(**faults),
                         token=TOKEN, api_key=API_KEY)


def config_for(server: FixtureServer, **settings) -> ScrapeConfig:
    """Settings pointing at ``server``, with fast retries, a fixed jitter seed and a rate that never binds."""
    return ScrapeConfig(**{**server.client_urls(), "backoff_base": 0.01, "seed": 0, "rate_limit": 1000.0, **settings})


def client_for(server: FixtureServer, *, token: str | None = TOKEN, api_key: str | None = None,
               environ: dict[str, str] | None = None, **settings) -> TMDBClient:
    credentials = Credentials.resolve(token, api_key, environ={} if environ is None else environ)
    return TMDBClient(config_for(server, **settings), credentials)


def fetch(server: FixtureServer, ids, **kwargs) -> tuple[list[dict], TMDBClient]:
    async def go():
        async with client_for(server, **kwargs) as client:
            return [await client.fetch_movie_row(1000 + i, i) for i in ids], client

    return asyncio.run(go())


def per_path(server: FixtureServer) -> Counter:
    return Counter(r.path for r in server.requests)


# ---- statuses ------------------------------------------------------------------------------


def test_ok_row_has_the_served_content_and_the_real_trailer():
    movie = make_movie(3)
    with serve([movie]) as server:
        [row], client = fetch(server, [3])
        requests = server.requests
    assert row["status"] == "ok" and row["error"] is None
    assert (row["movie_id"], row["tmdb_id"]) == (1003, 3)
    assert row["overview"] == "Overview of movie 3." and row["title"] == "Movie 3"
    assert row["genres"] == ["Drama", "Science Fiction"]
    assert row["poster"] == movie.poster() and row["poster_path"] == "/p3.jpg"
    assert row["thumbnail"] == movie.thumbnail()
    # The fixture lists a Vimeo trailer, a featurette and a teaser first; only this one is right.
    assert row["trailer_key"] == "trailer00003"
    assert row["attempts"] == 3 and len(requests) == 3
    # The credential goes to the API only, never to the image or thumbnail hosts.
    assert {r.kind: r.credentials for r in requests} == {"api": "bearer", "image": None, "thumbnail": None}
    assert client.stats.requests == 3 and client.stats.by_status == {200: 3}
    assert client.stats.bytes_received > len(row["poster"]) + len(row["thumbnail"])
    assert client.stats.requests_per_second > 0


def test_every_status():
    movies = [make_movie(1), make_movie(2, poster=False), make_movie(3, trailer=False), make_movie(4),
              make_movie(5)]
    with serve(movies, not_found_ids={4}) as server:
        rows, _ = fetch(server, [1, 2, 3, 4, 99])
    status = {row["tmdb_id"]: row["status"] for row in rows}
    assert status == {1: "ok", 2: "no_poster", 3: "no_trailer", 4: "not_found", 99: "not_found"}
    by_id = {row["tmdb_id"]: row for row in rows}
    assert by_id[2]["poster"] is None and by_id[2]["thumbnail"] is not None
    assert "no poster_path" in by_id[2]["error"]
    assert by_id[3]["poster"] is not None and by_id[3]["thumbnail"] is None
    assert "no YouTube trailer" in by_id[3]["error"]  # the Vimeo trailer is not taken
    assert by_id[99]["attempts"] == 1 and "99" in by_id[99]["error"]

    with serve(movies, fail_first=100, fail_mode="503", retry_after=None) as server:
        [row], _ = fetch(server, [1], max_attempts=2)
    assert row["status"] == "failed" and row["attempts"] == 2 and "gave up after 2 attempts" in row["error"]


def test_placeholder_404_thumbnail_is_missing():
    # A trailer whose thumbnail the host does not have: YouTube sends 404 + a real grey JPEG.
    with serve([make_movie(1, thumbnail=False)]) as server:
        [row], _ = fetch(server, [1])
        thumb = [r for r in server.requests if r.kind == "thumbnail"]
    assert check_image(placeholder_jpeg(), "image/jpeg") is None  # the body would pass as an image
    assert [r.status for r in thumb] == [404]
    assert row["status"] == "no_trailer" and row["thumbnail"] is None and row["trailer_key"] == "trailer00001"
    assert "thumbnail: missing (HTTP 404)" in row["error"]


# ---- retries -------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["429", "500", "502", "503", "504", "drop"])
def test_transient_failures_are_retried_until_success(mode):
    with serve(fail_first=2, fail_mode=mode, retry_after=0.05) as server:
        [row], client = fetch(server, [2], max_attempts=3)
        counts = per_path(server)
        statuses = [r.status for r in server.requests]
    assert row["status"] == "ok", row["error"]
    assert row["attempts"] == 9 and client.stats.requests == 9 and client.stats.retries == 6
    assert sorted(counts.values()) == [3, 3, 3]  # each URL: two failures, then the answer
    expected_fail = 0 if mode == "drop" else int(mode)
    assert statuses.count(expected_fail) == 6 and statuses.count(200) == 3
    if mode == "drop":
        assert sum(client.stats.errors.values()) == 6


def test_the_private_aiohttp_switch_we_turn_off_is_still_what_aiohttp_reads(caplog):
    """``no_silent_resend`` sets aiohttp's private ``_retry_connection``; the "drop" case above sees its
    effect (each dropped attempt counted once). This fails first if the pinned aiohttp moves it."""
    import types

    import aiohttp

    async def check():
        session = aiohttp.ClientSession()
        try:
            assert session._retry_connection is True  # aiohttp's default: resend once, silently
            no_silent_resend(session)
            assert session._retry_connection is False
        finally:
            await session.close()

    asyncio.run(check())
    assert "_retry_connection" in aiohttp.ClientSession._request.__code__.co_names  # read per request
    with caplog.at_level(logging.WARNING, logger="armor.tmdb.client"):
        no_silent_resend(types.SimpleNamespace())  # an aiohttp without it: said, not silently skipped
    assert "no ClientSession._retry_connection" in caplog.text


def test_retry_after_is_honoured_and_capped():
    def gap(retry_after, **kwargs):
        with serve(fail_first=1, fail_mode="429", retry_after=retry_after, kinds={"api"}) as server:
            [row], _ = fetch(server, [1], backoff_base=0.0, **kwargs)
            api = [r for r in server.requests if r.kind == "api"]
        assert row["status"] == "ok" and [r.status for r in api] == [429, 200]
        return api[1].t - api[0].t

    assert gap(1) >= 0.95
    assert gap(None) < 0.3  # without the header the (zero) backoff applies
    assert 0.25 <= gap(30, retry_after_cap=0.3) < 1.0


def test_timeouts_are_retried():
    with serve(fail_first=1, fail_mode="stall", stall_s=3.0, kinds={"api"}) as server:
        started = time.monotonic()
        [row], client = fetch(server, [1], total_timeout=0.3)
        elapsed = time.monotonic() - started
    assert row["status"] == "ok" and row["attempts"] == 4
    assert elapsed < 2.5
    assert any("Timeout" in name for name in client.stats.errors), client.stats.errors


def test_exhausted_retries_fail_with_a_redacted_error():
    with serve(fail_first=100, fail_mode="503", retry_after=None) as server:
        [row], client = fetch(server, [1], token=None, api_key=API_KEY, max_attempts=3)
        requests = server.requests
    assert row["status"] == "failed" and row["attempts"] == 3 and len(requests) == 3
    assert "gave up after 3 attempts (last: HTTP 503)" in row["error"]
    assert "api_key=***" in row["error"] and API_KEY not in row["error"]
    assert [r.credentials for r in requests] == ["api_key"] * 3
    assert client.stats.retries == 2 and client.stats.by_status == {503: 3}


# ---- authentication and secrets -------------------------------------------------------------


@pytest.mark.parametrize("creds", [{"token": "tok-WRONG-91c3"}, {"token": None, "api_key": "key-WRONG-55d1"}])
def test_401_fails_fast(creds):
    with serve(fail_first=0) as server:
        async def go():
            async with client_for(server, **creds) as client:
                await client.fetch_movie_row(1, 1)

        with pytest.raises(AuthError) as info:
            asyncio.run(go())
        requests = server.requests
    message = str(info.value)
    assert "TMDB_API_TOKEN" in message and "TMDB_API_KEY" in message and "401" in message
    assert not any(secret in message for secret in creds.values() if secret)
    assert len(requests) == 1 and requests[0].status == 401
    assert isinstance(info.value, ArmorError)


def test_credentials_from_environment_and_precedence():
    with pytest.raises(AuthError) as info:
        Credentials.resolve(environ={})
    assert "TMDB_API_TOKEN" in str(info.value) and "TMDB_API_KEY" in str(info.value)
    assert Credentials.resolve(environ={"TMDB_API_TOKEN": TOKEN, "TMDB_API_KEY": API_KEY}).mode == "bearer"
    assert Credentials.resolve(environ={"TMDB_API_KEY": API_KEY}).mode == "api_key"
    # An explicit argument beats the environment, whatever its kind.
    explicit = Credentials.resolve(api_key=API_KEY, environ={"TMDB_API_TOKEN": "tok-from-env"})
    assert explicit.mode == "api_key" and explicit.token is None
    with serve() as server:
        [row], _ = fetch(server, [1], token=None, api_key=API_KEY, environ={"TMDB_API_TOKEN": "tok-from-env"})
        assert row["status"] == "ok"
        assert {r.credentials for r in server.requests if r.kind == "api"} == {"api_key"}


@pytest.mark.parametrize("mode", ["bearer", "api_key"])
def test_secret_never_leaks(mode, caplog):
    secret = TOKEN if mode == "bearer" else API_KEY
    creds = {"token": TOKEN} if mode == "bearer" else {"token": None, "api_key": API_KEY}
    texts: list[str] = []
    caplog.set_level(logging.DEBUG)
    with serve(catalogue(3), fail_first=100, fail_mode="503", retry_after=None, kinds={"image"},
               malicious_path_ids={3}) as server:
        async def go():
            async with client_for(server, max_attempts=2, **creds) as client:
                texts.extend([repr(client), str(client), repr(client._credentials), str(client._credentials),
                              repr(client.stats.as_dict())])
                rows = [await client.fetch_movie_row(i, i) for i in (1, 2, 3, 404)]
                rows.append(await client.search_movie("Movie", 1991))
                return rows

        rows = asyncio.run(go())
        requests = server.requests
        wrong = {"token": secret} if mode == "api_key" else {"token": None, "api_key": secret}

        async def go_wrong():  # the secret sent the wrong way: 401
            async with client_for(server, **wrong) as client:
                await client.fetch_movie_row(1, 1)

        with pytest.raises(AuthError) as info:
            asyncio.run(go_wrong())
    texts += [str(rows), str(info.value), repr(info.value), "".join(traceback.format_exception(info.value))]
    texts.append(caplog.text)
    assert any("giving up" in r.getMessage() for r in caplog.records)  # DEBUG/INFO logging did happen
    assert [r["status"] for r in rows[:4]] == ["failed", "failed", "no_poster", "not_found"]
    for text in texts:
        assert secret not in text
    # What the client put on the wire: no secret in any URL path, no credential to image hosts.
    assert all(secret not in r.path for r in requests)
    assert {r.credentials for r in requests if r.kind != "api"} == {None}
    assert redact_url(f"http://x/3/movie/1?api_key={API_KEY}&a=1") == "http://x/3/movie/1?api_key=***&a=1"


# ---- hostile data ---------------------------------------------------------------------------


def test_malicious_poster_paths_are_never_requested():
    ids = list(range(1, len(MALICIOUS_POSTER_PATHS) + 1))  # id % len covers every hostile path
    with serve(catalogue(len(ids)), malicious_path_ids=set(ids)) as server:
        rows, _ = fetch(server, ids)
        requests = server.requests
    for row in rows:
        assert row["status"] == "no_poster" and row["poster"] is None and row["poster_path"] is None
        assert "rejected poster_path" in row["error"], row["error"]
        assert row["thumbnail"] is not None  # the rest of the movie is still fetched
    assert not [r for r in requests if r.kind == "image"]
    for r in requests:
        assert not any(bad in r.path.lower() for bad in ("evil", "passwd", "%2e", "..", "//"))


@pytest.mark.parametrize("path, ok", [
    ("/kqjL17yufvn9OVLyXYpvtyrFfak.jpg", True), ("/a-b_c.PNG", True), ("/x.webp", True), ("/x.jpeg", True),
    ("/../../etc/passwd", False), ("//evil.example/x.jpg", False), ("/a.jpg?x=1", False),
    ("/%2e%2e/x.jpg", False), ("https://evil.example/p.jpg", False), ("/ok.jpg\n", False), ("/a/b.jpg", False),
    ("/x.gif", False), ("x.jpg", False), ("/.jpg", False)])
def test_poster_path_allow_list(path, ok):
    assert bool(POSTER_PATH_RE.fullmatch(path)) is ok


def test_trailer_choice_prefers_official_trailers_and_is_order_free():
    def v(key, kind="Trailer", official=True, site="YouTube", date="2020-01-01"):
        return {"key": key, "type": kind, "official": official, "site": site, "published_at": date}

    videos = [v("teaserOff01", "Teaser"), v("trailerUn01", official=False), v("vimeo000001", site="Vimeo"),
              v("trailerOff2", date="2020-02-01"), v("trailerOff1"), v("clip0000001", "Clip"),
              v("bad key!!!", date="2019-01-01")]
    for seed in range(5):
        random.Random(seed).shuffle(videos)
        assert pick_trailer_key({"results": videos}) == ("trailerOff1", None)
    assert pick_trailer_key({"results": [v("teaserUn001", "Teaser", False), v("teaserOff01", "Teaser")]})[0] \
        == "teaserOff01"
    assert pick_trailer_key({"results": [v("trailerUn01", official=False), v("teaserOff01", "Teaser")]})[0] \
        == "trailerUn01"
    key, why = pick_trailer_key({"results": [v("../../x"), v("a" * 30)]})
    assert key is None and "rejected" in why
    assert pick_trailer_key(None) == (None, "no videos")


def test_bomb_image_is_rejected_from_its_header(monkeypatch):
    decoded_sizes = []
    original_load = ImageFile.ImageFile.load

    def spy(self):
        decoded_sizes.append(self.size)
        return original_load(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", spy)
    # Our own pixel cap works even when Pillow's guard is switched off.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    bomb = bomb_png()
    assert len(bomb) < 2000
    started = time.monotonic()
    with serve(bomb_ids={1}) as server:
        [row], _ = fetch(server, [1])
    assert time.monotonic() - started < 3.0
    assert row["status"] == "no_poster" and row["poster"] is None
    assert "declares 50000x50000 pixels" in row["error"]
    assert (50000, 50000) not in decoded_sizes
    assert (48, 36) in decoded_sizes  # the thumbnail was decoded: the spy works
    reason = check_image(jpeg((200, 100), (1, 2, 3)), "image/jpeg", max_pixels=10_000)
    assert reason is not None and "200x100" in reason


@pytest.mark.parametrize("fault, needle", [("share_corrupt", "invalid image"), ("share_truncated", "does not decode")])
def test_corrupt_and_truncated_images_are_rejected(fault, needle):
    with serve(catalogue(3), **{fault: 1.0}) as server:
        rows, _ = fetch(server, [1, 2, 3])
    for row in rows:
        assert row["status"] == "no_poster" and row["poster"] is None and row["thumbnail"] is None
        assert needle in row["error"]
    good = jpeg((64, 64), (10, 200, 30))
    assert check_image(good, "image/jpeg") is None
    assert check_image(corrupt(good), "image/jpeg") is not None
    assert "does not decode" in check_image(truncate(good), "image/jpeg")


def test_wrong_content_type_and_oversized_images_are_rejected():
    with serve(catalogue(2), wrong_type_ids={1}) as server:
        rows, _ = fetch(server, [1, 2])
        big, _ = fetch(server, [2], max_image_bytes=200)
    assert rows[0]["status"] == "no_poster" and "content type 'text/html'" in rows[0]["error"]
    assert rows[1]["status"] == "ok"
    assert big[0]["status"] == "no_poster" and "over the cap of 200 bytes" in big[0]["error"]


# ---- rate limiting --------------------------------------------------------------------------


def max_in_window(times: list[float], window: float = 1.0) -> int:
    times = sorted(times)
    best, j = 0, 0
    for i, t in enumerate(times):
        while times[j] <= t - window:
            j += 1
        best = max(best, i - j + 1)
    return best


def run_concurrently(server: FixtureServer, n_movies: int, concurrency: int, **kwargs) -> list[dict]:
    async def go():
        gate = asyncio.Semaphore(concurrency)
        async with client_for(server, max_connections=concurrency, **kwargs) as client:
            async def one(i):
                async with gate:
                    return await client.fetch_movie_row(i, i)

            return await asyncio.gather(*(one(i) for i in range(1, n_movies + 1)))

    return asyncio.run(go())


def test_rate_limit_holds_at_the_server_in_every_sliding_second():
    rate, burst, n_movies = 25.0, 5, 36  # 3 requests per movie: 108 requests
    with serve(catalogue(n_movies)) as server:
        started = time.monotonic()
        rows = run_concurrently(server, n_movies, 16, rate_limit=rate, burst=burst)
        elapsed = time.monotonic() - started
        times = [r.t for r in server.requests]
    assert {row["status"] for row in rows} == {"ok"} and len(times) == 3 * n_movies
    worst = max_in_window(times)
    # At most burst + rate * 1 s tokens exist in any 1 s window. The server stamps arrival
    # times, so a scheduling hiccup on a loaded machine can bunch a request or two: slack of 2.
    assert worst <= rate + burst + 2, worst
    assert worst >= 0.8 * rate  # and the limiter is not simply slow
    assert elapsed >= (len(times) - burst) / rate * 0.95

    # Control: without the limit the same load goes far over it, so the check above can fail.
    with serve(catalogue(n_movies)) as server:
        run_concurrently(server, n_movies, 16, rate_limit=1e6, burst=1000)
        assert max_in_window([r.t for r in server.requests]) > 2 * (rate + burst)


# ---- misc ----------------------------------------------------------------------------------


def test_search_movie_returns_tmdb_results():
    with serve(catalogue(6)) as server:
        async def go():
            async with client_for(server) as client:
                return await client.search_movie("movie 3", 1993), await client.search_movie("movie", None)

        hits, many = asyncio.run(go())
    assert [h["id"] for h in hits] == [3] and hits[0]["title"] == "Movie 3"
    assert hits[0]["release_date"].startswith("1993")
    assert len(many) == 6


@pytest.mark.parametrize("field, value", [
    ("poster_size", "../x"), ("tmdb_api_url", "ftp://x"), ("tmdb_image_url", "http://"), ("thumbnail_url", "http://[::1"),
    ("rate_limit", 0), ("burst", 0), ("max_attempts", 0), ("max_connections", 1.5), ("total_timeout", 0),
    ("connect_timeout", -1.0), ("backoff_base", -0.1), ("backoff_cap", 0), ("retry_after_cap", 0),
    ("max_json_bytes", 0), ("max_image_bytes", 2.5), ("max_image_pixels", 0), ("language", " "), ("seed", "x"),
])
def test_bad_settings_name_the_setting(field, value):
    # Checked once, where the setting is made: a client is only ever built from a valid ScrapeConfig.
    with pytest.raises(ConfigError, match=rf"^scrape\.{field}: "):
        ScrapeConfig(**{field: value})


def test_a_shared_rate_limiter_checks_its_own_settings():
    with pytest.raises(ConfigError, match="^rate: "):
        RateLimiter(0)
    with pytest.raises(ConfigError, match="^burst: "):
        RateLimiter(10.0, burst=0)
