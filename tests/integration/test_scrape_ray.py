"""The Ray Data scrape job against the local TMDB-compatible server."""

import time

import numpy as np
import pyarrow.parquet as pq
import pytest

from armor.config import ScrapeConfig
from armor.data.synthetic import SyntheticConfig, SyntheticWorld
from armor.tmdb.client import AuthError, Credentials
from armor.tmdb.fixture import Faults, FixtureServer
from armor.tmdb.scrape import ScrapeStore
from armor.tmdb.standin import load_catalogue
from pipelines.scrape import scrape

pytestmark = [pytest.mark.ray, pytest.mark.network, pytest.mark.slow]

SECRET = "tok-SECRET-c0ffee-do-not-log"


@pytest.fixture
def workspace(tmp_path):
    ws = tmp_path / "ws"
    ws.mkdir()
    pq.write_table(SyntheticWorld(SyntheticConfig.preset("tiny")).movies(), ws / "movies.parquet")
    return ws


def serve(faults=None):
    return FixtureServer(load_catalogue("synthetic:tiny"), faults=faults, token=SECRET)


def config_for(server, **overrides):
    return ScrapeConfig(**server.client_urls(), **overrides)


def test_scrape_with_faults_gives_every_status_once_and_reruns_only_the_rest(ray_local, workspace, caplog):
    faults = Faults(seed=3, share_429=0.08, retry_after=0.05, share_5xx=0.08, share_drop=0.04,
                    share_no_trailer=0.15, bomb_ids={100003}, malicious_path_ids={100004}, not_found_ids={100005})
    with serve(faults) as server:
        summary = scrape(workspace, config_for(server, rate_limit=200, max_attempts=8), Credentials(token=SECRET))
        assert summary["retries"] > 0  # transient faults happened and were recovered
        table = ScrapeStore(workspace / "tmdb").read()
        status = dict(zip(table["movie_id"].to_pylist(), table["status"].to_pylist()))
        assert sorted(status) == list(range(1, 81))  # every movie exactly once
        assert status[3] == "no_poster" and status[4] == "no_poster" and status[5] == "not_found"
        assert "failed" not in status.values()
        no_trailer = {m for m, s in status.items() if s == "no_trailer"}
        assert 3 <= len(no_trailer) <= 25
        assert sum(s == "ok" for s in status.values()) == 80 - 3 - len(no_trailer)
        ok = table.filter(np.array([s == "ok" for s in table["status"].to_pylist()]))
        assert all(ok["poster"].to_pylist()) and all(ok["thumbnail"].to_pylist()) and all(ok["overview"].to_pylist())
        # the malicious poster path was never requested
        assert not [r for r in server.requests if ".." in r.path or "passwd" in r.path]

        server.clear_requests()
        again = scrape(workspace, config_for(server, rate_limit=200, max_attempts=8), Credentials(token=SECRET))
        asked = {int(r.path.split("/")[3].split("?")[0]) for r in server.requests if r.path.startswith("/3/movie/")}
        assert asked == {m + 100000 for m, s in status.items() if s != "ok"}
        assert again["requested_this_run"] == len(asked)
        assert sorted(ScrapeStore(workspace / "tmdb").read()["movie_id"].to_pylist()) == list(range(1, 81))

    for path in (workspace / "tmdb").iterdir():
        assert SECRET.encode() not in path.read_bytes(), path
    assert SECRET not in caplog.text


def test_job_rate_stays_under_the_limit_across_actors(ray_local, workspace):
    rate, burst = 20.0, 4
    with serve() as server:
        scrape(workspace, config_for(server, rate_limit=rate, burst=burst, actors=2, batch_size=4),
               Credentials(token=SECRET), limit=40)
        times = np.array(sorted(r.t for r in server.requests if r.kind != "health"))
    assert times.size >= 120  # 40 movies x (movie, poster, thumbnail)
    window_counts = np.searchsorted(times, times + 1.0, side="left") - np.arange(times.size)
    assert window_counts.max() <= rate + burst, window_counts.max()
    # and the job did use its budget: the busiest second is close to the limit
    assert window_counts.max() >= 0.7 * rate


def test_bad_credentials_fail_fast_before_any_work(ray_local, workspace):
    with serve() as server:
        started = time.monotonic()
        with pytest.raises(AuthError, match="TMDB_API_TOKEN"):
            scrape(workspace, config_for(server), Credentials(token="wrong-token"))
        assert time.monotonic() - started < 3
        assert len([r for r in server.requests if r.kind == "api"]) == 1
    assert ScrapeStore(workspace / "tmdb").parts() == []
