"""The resumable scrape store and the per-movie scrape logic, without Ray."""

import asyncio

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from armor.config import ScrapeConfig
from armor.errors import ConfigError
from armor.tmdb.client import Credentials
from armor.tmdb.fixture import FixtureServer
from armor.tmdb.scrape import (
    SCRAPE_SCHEMA,
    ScrapeStore,
    make_client,
    modality_coverage,
    multimodal_movie_ids,
    pending_requests,
    scrape_batch,
)
from armor.tmdb.standin import load_catalogue


def rows(movie_ids, status, t, poster=b"p"):
    n = len(movie_ids)
    return pa.table({"movie_id": movie_ids, "tmdb_id": [m + 100000 for m in movie_ids], "status": [status] * n,
                     "title": ["t"] * n, "overview": ["o"] * n, "release_date": [None] * n, "genres": [[]] * n,
                     "poster_path": [None] * n, "poster": [poster] * n, "trailer_key": [None] * n,
                     "thumbnail": [b"t" if status == "ok" else None] * n, "error": [None] * n, "attempts": [1] * n,
                     "link_confidence": [None] * n, "link_query": [None] * n, "scraped_at": [t] * n},
                    schema=SCRAPE_SCHEMA)


def test_compaction_keeps_ok_then_latest_once_per_movie(tmp_path):
    store = ScrapeStore(tmp_path / "tmdb")
    store.write_part(rows([1, 2, 3], "failed", 1000))
    store.write_part(rows([2], "ok", 2000))          # retry succeeded
    store.write_part(rows([3], "no_trailer", 3000))  # retry got further
    store.write_part(rows([1], "failed", 4000))      # retry failed again: latest failure wins
    store.write_part(rows([4], "ok", 500))
    store.write_part(rows([4], "failed", 600))       # an ok row is never replaced by a later failure
    assert store.compact() == 4
    table = store.read()
    assert sorted(table["movie_id"].to_pylist()) == [1, 2, 3, 4]
    assert store.statuses() == {1: "failed", 2: "ok", 3: "no_trailer", 4: "ok"}
    at = dict(zip(table["movie_id"].to_pylist(), table["scraped_at"].cast(pa.int64()).to_pylist()))
    assert at == {1: 4000, 2: 2000, 3: 3000, 4: 500}
    assert store.compact() == 0  # idempotent
    assert len(store.parts()) == 4  # emptied parts are removed


def test_hidden_temporaries_are_ignored(tmp_path):
    store = ScrapeStore(tmp_path)
    store.write_part(rows([1], "ok", 1))
    (tmp_path / ".part-000000002-dead.parquet.abc.tmp").write_bytes(b"half a file")
    assert store.read().num_rows == 1 and store.compact() == 0


def test_pending_requests_skip_only_ok(tmp_path):
    store = ScrapeStore(tmp_path)
    store.write_part(rows([1], "ok", 1))
    store.write_part(rows([2], "not_found", 1))
    movies = pa.table({"movie_id": pa.array([1, 2, 3], pa.int32()), "title": ["a", "b", "c"],
                       "year": pa.array([None, 1999, 2000], pa.int32()), "tmdb_id": pa.array([None, 5, 6], pa.int32()),
                       "genres": [[], [], []]})
    assert pending_requests(movies, store)["movie_id"].to_pylist() == [2, 3]


def test_modality_coverage_and_missing_modality_policy():
    t = pa.concat_tables([rows([1], "ok", 1), rows([2], "no_trailer", 1), rows([3], "no_poster", 1, poster=None)])
    t = t.set_column(t.schema.get_field_index("overview"), "overview", pa.array(["text", "  ", "text"]))
    coverage = modality_coverage(t)
    assert (coverage.with_text, coverage.with_poster, coverage.with_thumbnail, coverage.complete) == (2, 2, 1, 1)
    assert multimodal_movie_ids(t, "exclude").tolist() == [1]
    assert multimodal_movie_ids(t, "impute").tolist() == [1, 2, 3]


def test_scrape_config_validation_and_rate_share():
    assert ScrapeConfig(rate_limit=40, actors=4).per_actor_rate() == (10.0, 2)
    with pytest.raises(ConfigError, match="scrape.rate_limit"):
        ScrapeConfig(rate_limit=0)
    with pytest.raises(ConfigError, match="scrape.missing_modality"):
        ScrapeConfig(missing_modality="drop")


def test_scrape_batch_links_by_title_when_there_is_no_tmdb_id(tmp_path):
    ws = tmp_path / "ws"
    ws.mkdir()
    movies = pa.table({"movie_id": pa.array([1, 2], pa.int32()), "title": ["Matrix, The", "Nonexistent Film Xyz"],
                       "year": pa.array([1999, 1950], pa.int32()), "genres": [["Action", "Sci-Fi"], ["Drama"]],
                       "imdb_id": pa.array([None, None], pa.string()), "tmdb_id": pa.array([None, None], pa.int32())})
    pq.write_table(movies, ws / "movies.parquet")
    catalogue = [m for m in load_catalogue(ws) if m.movie_id == 1]  # the server knows only The Matrix
    with FixtureServer(catalogue) as server:
        config = ScrapeConfig(**server.client_urls())

        async def go():
            async with make_client(config, Credentials(token=server.token)) as client:
                return await scrape_batch(client, movies.select(["movie_id", "title", "year", "tmdb_id"]).to_pylist(),
                                          config.link_threshold)

        table = asyncio.run(go())
    by_id = {r["movie_id"]: r for r in table.to_pylist()}
    assert by_id[1]["status"] == "ok" and by_id[1]["tmdb_id"] == catalogue[0].tmdb_id
    assert by_id[1]["link_confidence"] > 0.9 and by_id[1]["link_query"] == "The Matrix"
    assert by_id[2]["status"] == "not_found" and "not linked" in by_id[2]["error"]
    assert table.schema == SCRAPE_SCHEMA


def test_a_scrape_actor_keeps_one_session_across_batches_and_closes_it_when_deleted(tmp_path):
    import threading

    from pipelines.scrape import ScrapeWorker

    catalogue = load_catalogue("synthetic:small")[:24]
    requests = pa.table({"movie_id": pa.array([m.movie_id for m in catalogue], pa.int32()),
                         "title": [m.title for m in catalogue],
                         "year": pa.array([m.year for m in catalogue], pa.int32()),
                         "tmdb_id": pa.array([m.tmdb_id for m in catalogue], pa.int32())})
    # As in a Ray Data actor: the coroutines run on an event loop in another thread, and the actor's
    # main thread deletes the instance when the pool shuts down.
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        with FixtureServer(catalogue) as server:
            worker = ScrapeWorker(ScrapeConfig(**server.client_urls(), max_connections=4), str(tmp_path),
                                  Credentials(token=server.token))
            first = asyncio.run_coroutine_threadsafe(worker(requests.slice(0, 12)), loop).result(60)
            after_first = {r.peer for r in server.requests}
            second = asyncio.run_coroutine_threadsafe(worker(requests.slice(12, 12)), loop).result(60)
            peers = [r.peer for r in server.requests]
            session = worker.client._session
            assert session is not None and not session.closed
            worker.__del__()
            assert session.closed
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
    # One session for the actor: the second batch rides the first one's connections (a session per
    # batch reconnected for every batch), and never more than max_connections are open.
    assert None not in peers and len(set(peers)) <= 4 and set(peers) == after_first
    assert set(first["status"]) | set(second["status"]) == {"ok"}
    # Every request is reported once, over the batches, on each batch's first row.
    assert int(first["requests"].sum() + second["requests"].sum()) == len(peers) == 72
