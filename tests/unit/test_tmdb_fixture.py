"""The local TMDB-compatible fixture server: shapes, auth, faults, catalogues and its CLI."""

from __future__ import annotations

import asyncio
import io
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from armor.errors import ConfigError
from armor.tmdb.client import check_image
from armor.tmdb.fixture import Faults, FixtureServer, parse_ids
from armor.tmdb.standin import (
    WORKSPACE_TMDB_BASE,
    FixtureMovie,
    bomb_png,
    default_standin_content,
    load_catalogue,
    placeholder_jpeg,
    youtube_key,
)

pytestmark = pytest.mark.network

ROOT = Path(__file__).resolve().parents[2]
TOKEN, API_KEY = "fixture-test-token", "fixture-test-key"


def jpeg(colour=(200, 30, 30), size=(30, 45)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="JPEG")
    return buf.getvalue()


def movies() -> list[FixtureMovie]:
    return [
        FixtureMovie(603, "The Matrix", 1999, ["Action", "Sci-Fi"], "A hacker learns the truth.",
                     poster=lambda: jpeg((0, 200, 0)), thumbnail=lambda: jpeg((0, 90, 0), (48, 36)),
                     trailer_key="vKQi3bBA1y8"),
        FixtureMovie(902, "The City of Lost Children", 1995, ["Fantasy", "Film-Noir"], lambda: "Dreams are stolen.",
                     poster=lambda: jpeg((90, 0, 90)), thumbnail=None, trailer_key="Yc3pL5E2gFQ",
                     original_title="La Cité des enfants perdus"),
        FixtureMovie(7, "No Pictures", 2001, [], "Nothing to see.", trailer_key=None),
    ]


def get(server: FixtureServer | str, path: str, headers=None, auth=True) -> tuple[int, str, bytes, dict]:
    base = server if isinstance(server, str) else server.url

    async def go():
        hdrs = dict(headers or {})
        if auth:
            hdrs.setdefault("Authorization", f"Bearer {TOKEN}")
        async with aiohttp.ClientSession() as session:
            async with session.get(base + path, headers=hdrs) as resp:
                return resp.status, resp.headers.get("Content-Type", ""), await resp.read(), dict(resp.headers)

    return asyncio.run(go())


def serve(**faults) -> FixtureServer:
    return FixtureServer(movies(), faults=Faults(**faults), token=TOKEN, api_key=API_KEY)


def test_movie_endpoint_has_tmdbs_shape():
    import json

    with serve() as server:
        status, ctype, body, _ = get(server, "/3/movie/603?append_to_response=videos")
        plain = json.loads(get(server, "/3/movie/902")[2])
        missing = get(server, "/3/movie/12345")
    data = json.loads(body)
    assert status == 200 and ctype.startswith("application/json")
    assert {"id", "title", "overview", "poster_path", "release_date", "genres", "videos"} <= set(data)
    assert (data["id"], data["title"], data["release_date"]) == (603, "The Matrix", "1999-01-01")
    assert data["genres"] == [{"id": 28, "name": "Action"}, {"id": 878, "name": "Science Fiction"}]
    assert data["poster_path"] == "/p603.jpg"
    keys = [(v["site"], v["type"], v["key"]) for v in data["videos"]["results"]]
    assert ("YouTube", "Trailer", "vKQi3bBA1y8") in keys and ("Vimeo", "Trailer", "100000603") in keys
    assert "videos" not in plain and plain["overview"] == "Dreams are stolen."  # callable overview
    assert plain["original_title"] == "La Cité des enfants perdus"
    assert missing[0] == 404 and b'"status_code": 34' in missing[2]


def test_auth_like_tmdb():
    import json

    with serve() as server:
        none = get(server, "/3/movie/603", auth=False)
        wrong = get(server, "/3/movie/603", headers={"Authorization": "Bearer nope"})
        key_ok = get(server, f"/3/movie/603?api_key={API_KEY}", auth=False)
        key_bad = get(server, "/3/movie/603?api_key=nope", auth=False)
        image = get(server, "/t/p/w500/p603.jpg", auth=False)  # images are public, as on TMDB's CDN
        log = server.requests
    for status, _, body, _ in (none, wrong, key_bad):
        assert status == 401
        assert json.loads(body)["status_code"] == 7 and "Invalid API key" in json.loads(body)["status_message"]
    assert key_ok[0] == 200 and image[0] == 200
    assert [r.credentials for r in log] == [None, "bearer", "api_key", "api_key", None]
    assert all(API_KEY not in r.path for r in log) and "api_key=***" in log[2].path
    with FixtureServer(movies(), token=None, api_key=None) as open_server:
        assert get(open_server, "/3/movie/603", auth=False)[0] == 200


def test_search_shape_year_filter_and_original_titles():
    import json

    with serve() as server:
        by_title = json.loads(get(server, "/3/search/movie?query=matrix&year=1999")[2])
        wrong_year = json.loads(get(server, "/3/search/movie?query=matrix&year=2003")[2])
        by_original = json.loads(get(server, "/3/search/movie?query=cite%20des%20enfants")[2])
        nothing = json.loads(get(server, "/3/search/movie?query=zzz")[2])
    assert by_title["page"] == 1 and by_title["total_results"] == 1
    hit = by_title["results"][0]
    assert {"id", "title", "original_title", "release_date", "overview", "poster_path"} <= set(hit)
    assert hit["id"] == 603
    assert wrong_year["results"] == [] and wrong_year["total_results"] == 0
    assert [r["id"] for r in by_original["results"]] == [902]  # accents ignored, original title matched
    assert nothing["results"] == []


def test_images_thumbnails_and_placeholder():
    with serve() as server:
        poster = get(server, "/t/p/w500/p603.jpg", auth=False)
        thumb = get(server, "/vi/vKQi3bBA1y8/hqdefault.jpg", auth=False)
        unknown = get(server, "/vi/AAAAAAAAAAA/hqdefault.jpg", auth=False)
        no_thumb = get(server, "/vi/Yc3pL5E2gFQ/hqdefault.jpg", auth=False)
        no_poster = get(server, "/t/p/w500/p7.jpg", auth=False)
        health = get(server, "/health", auth=False)
    assert poster[:2] == (200, "image/jpeg") and Image.open(io.BytesIO(poster[2])).size == (30, 45)
    assert thumb[0] == 200 and Image.open(io.BytesIO(thumb[2])).size == (48, 36)
    for status, ctype, body, _ in (unknown, no_thumb):
        assert (status, ctype) == (404, "image/jpeg") and body == placeholder_jpeg()
    assert Image.open(io.BytesIO(placeholder_jpeg())).size == (120, 90)
    assert no_poster[0] == 404
    assert health[0] == 200 and b'"movies": 3' in health[2]


def statuses(server: FixtureServer, paths: list[str]) -> list[int]:
    async def go():
        out = []
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"}) as session:
            for path in paths:
                async with session.get(server.url + path) as resp:
                    await resp.read()
                    out.append(resp.status)
        return out

    return asyncio.run(go())


def test_transient_faults_are_deterministic_and_near_their_share():
    paths = [f"/3/movie/603?n={i}" for i in range(200)] + ["/3/movie/603"] * 50
    runs = []
    for seed in (1, 1, 2):
        with serve(seed=seed, share_429=0.1, share_5xx=0.2) as server:
            runs.append(statuses(server, paths))
    assert runs[0] == runs[1] and runs[0] != runs[2]
    share_429 = runs[0].count(429) / len(paths)
    share_5xx = sum(runs[0].count(s) for s in (500, 502, 503, 504)) / len(paths)
    assert 0.04 < share_429 < 0.18 and 0.12 < share_5xx < 0.3
    assert set(runs[0]) <= {200, 429, 500, 502, 503, 504}


def test_fail_first_n_per_url_then_succeed():
    with serve(fail_first=2, fail_mode="429", retry_after=3) as server:
        first = statuses(server, ["/3/movie/603"] * 3 + ["/3/movie/902"] * 3)
        _, _, _, headers = get(server, "/3/movie/7?x=1")
    assert first == [429, 429, 200, 429, 429, 200]
    assert headers.get("Retry-After") == "3"


def test_dropped_connection_gets_no_answer():
    async def raw(url: str) -> bytes:
        host, port = url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"GET /t/p/w500/p603.jpg HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        return data

    with serve(fail_first=1, fail_mode="drop") as server:
        dropped = asyncio.run(raw(server.url))
        answered = asyncio.run(raw(server.url))
        log = server.requests
    assert dropped == b"" and answered.startswith(b"HTTP/1.1 200")
    assert [r.status for r in log] == [0, 200]


def test_content_faults():
    with serve(bomb_ids={603}, wrong_type_ids={902}, malicious_path_ids={7}, not_found_ids=set()) as server:
        bomb = get(server, "/t/p/w500/p603.jpg", auth=False)
        wrong = get(server, "/t/p/w500/p902.jpg", auth=False)
        path = get(server, "/3/movie/7")[2]
    assert bomb[1] == "image/png" and len(bomb[2]) < 2000
    Image.MAX_IMAGE_PIXELS, saved = None, Image.MAX_IMAGE_PIXELS
    try:
        assert Image.open(io.BytesIO(bomb_png())).size == (50000, 50000)
    finally:
        Image.MAX_IMAGE_PIXELS = saved
    assert wrong[1] == "text/html" and check_image(wrong[2], "image/jpeg") is None  # a good image, bad type
    assert b'"poster_path": "/p7.jpg"' not in path and b"poster_path" in path
    with serve(share_corrupt=0.5, share_truncated=0.5) as server:
        spoiled = [get(server, f"/t/p/w500/p{i}.jpg", auth=False)[2] for i in (603, 902)]
    assert all(check_image(body, "image/jpeg") is not None for body in spoiled)
    with serve(share_no_trailer=1.0) as server:
        videos = get(server, "/3/movie/603?append_to_response=videos")[2]
        assert get(server, "/vi/vKQi3bBA1y8/hqdefault.jpg", auth=False)[0] == 404
    assert b"YouTube" not in videos


def test_faults_are_validated():
    with pytest.raises(ConfigError, match="share_429"):
        Faults(share_429=1.5)
    with pytest.raises(ConfigError, match="fail_mode"):
        Faults(fail_mode="teapot")
    with pytest.raises(ConfigError, match="must not exceed"):
        Faults(share_429=0.6, share_drop=0.6)
    assert parse_ids("1, 3-5,9") == {1, 3, 4, 5, 9}
    with pytest.raises(ConfigError, match="'x'"):
        parse_ids("1,x")


def test_async_start_stop_api():
    async def go():
        server = FixtureServer(movies(), token=None, api_key=None)
        url = await server.start()
        try:
            async with aiohttp.ClientSession() as session:
                async with session.get(url + "/health") as resp:
                    return resp.status, url
        finally:
            await server.stop()

    status, url = asyncio.run(go())
    assert status == 200 and re.fullmatch(r"http://127\.0\.0\.1:\d+", url)


def test_standin_content_is_deterministic_and_genre_keyed():
    from PIL import ImageStat

    a = default_standin_content("Heat", 1995, ["Crime", "Drama"], 0)
    assert a == default_standin_content("Heat", 1995, ["Crime", "Drama"], 0)
    assert a != default_standin_content("Heat", 1986, ["Crime", "Drama"], 0)
    assert len(a[0].split()) > 10

    def mean_colour(genres):
        # averaged over several titles: the genre, not the title, must drive the palette
        means = [ImageStat.Stat(Image.open(io.BytesIO(default_standin_content(f"T{i}", 1990, genres, 0)[1]))
                                .convert("RGB")).mean for i in range(8)]
        return [sum(c) / len(c) for c in zip(*means)]

    horror, comedy = mean_colour(["Horror"]), mean_colour(["Comedy"])
    assert sum(abs(x - y) for x, y in zip(horror, comedy)) > 60
    assert Image.open(io.BytesIO(a[2])).size == (320, 180)
    assert check_image(a[1], "image/jpeg") is None and check_image(a[2], "image/jpeg") is None
    assert youtube_key(5) == youtube_key(5) != youtube_key(6) and len(youtube_key(5)) == 11


def test_load_catalogue_from_a_workspace(tmp_path):
    table = pa.table({"movie_id": pa.array([1, 2], pa.int32()), "title": ["Matrix, The", "Heat"],
                      "year": pa.array([1999, 1995], pa.int32()), "genres": [["Sci-Fi"], ["Crime"]],
                      "imdb_id": pa.array([None, None], pa.string()), "tmdb_id": pa.array([None, 949], pa.int32())})
    pq.write_table(table, tmp_path / "movies.parquet")
    calls = []

    def content(title, year, genres, seed):
        calls.append(title)
        return f"about {title}", jpeg(), jpeg()

    catalogue = load_catalogue(tmp_path, content=content)
    assert calls == []  # content is made lazily
    first, second = catalogue
    assert (first.tmdb_id, first.title, first.movie_id) == (WORKSPACE_TMDB_BASE + 1, "The Matrix", 1)
    assert second.tmdb_id == 949 and first.overview() == "about Matrix, The"
    assert check_image(first.poster(), "image/jpeg") is None
    with pytest.raises(ConfigError, match="synthetic:SIZE"):
        load_catalogue(tmp_path / "nowhere")


def test_load_synthetic_catalogue():
    catalogue = load_catalogue("synthetic:tiny")
    assert len(catalogue) == 80 and catalogue[0].tmdb_id == 100_001
    assert len({m.trailer_key for m in catalogue}) == 80
    movie = catalogue[0]
    assert isinstance(movie.overview(), str) and len(movie.overview()) > 20
    assert check_image(movie.poster(), "image/jpeg") is None
    assert check_image(movie.thumbnail(), "image/jpeg") is None


def test_cli_serves_until_interrupted(tmp_path):
    table = pa.table({"movie_id": pa.array([1], pa.int32()), "title": ["Heat"], "year": pa.array([1995], pa.int32()),
                      "genres": [["Crime"]], "tmdb_id": pa.array([None], pa.int32())})
    pq.write_table(table, tmp_path / "movies.parquet")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "pipelines.tmdb_fixture", "--catalogue", str(tmp_path),
                             "--port", "0", "--no-auth", "--latency", "0.01"],
                            cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    try:
        url, deadline = None, time.monotonic() + 20
        while url is None and time.monotonic() < deadline:
            line = proc.stderr.readline()
            match = re.search(r"api_url=(http://\S+)", line)
            url = match.group(1) if match else None
        assert url, "the CLI never printed its URL"
        status, _, body, _ = get(url, "/3/movie/900001", auth=False)
        assert status == 200 and b'"title": "Heat"' in body
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            rc = proc.wait(10)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert rc == 0
