"""A scrape killed at an arbitrary moment and run again ends with every movie exactly once."""

import argparse
import os
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest

from armor.config import ScrapeConfig
from armor.data.synthetic import SyntheticConfig, SyntheticWorld
from armor.tmdb.client import Credentials
from armor.tmdb.fixture import Faults, FixtureServer
from armor.tmdb.scrape import ScrapeStore
from armor.tmdb.standin import load_catalogue
from pipelines.cli import dataclass_from_args
from pipelines.scrape import add_arguments, scrape
from tests.processes import kill_tree

pytestmark = [pytest.mark.ray, pytest.mark.network, pytest.mark.slow]


def test_killed_scrape_resumes_without_duplicates_or_losses(tmp_path, request):
    ws = tmp_path / "ws"
    ws.mkdir()
    pq.write_table(SyntheticWorld(SyntheticConfig.preset("tiny")).movies(), ws / "movies.parquet")
    with FixtureServer(load_catalogue("synthetic:tiny"), faults=Faults(latency=0.05), token="t0k") as server:
        urls = server.client_urls()
        flags = ["--tmdb-api-url", urls["tmdb_api_url"], "--tmdb-image-url", urls["tmdb_image_url"],
                 "--thumbnail-url", urls["thumbnail_url"], "--rate-limit", "30", "--batch-size", "4"]
        env = {**os.environ, "TMDB_API_TOKEN": "t0k", "RAY_USAGE_STATS_ENABLED": "0"}
        job = subprocess.Popen([sys.executable, "-m", "pipelines.scrape", "--workspace", str(ws), *flags, "-q"],
                               env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
        store = ScrapeStore(ws / "tmdb")
        try:
            deadline = time.monotonic() + 90
            while len(store.parts()) < 3 and time.monotonic() < deadline and job.poll() is None:
                time.sleep(0.05)
            assert job.poll() is None, "the job finished before it could be killed"
        finally:
            kill_tree(job.pid)  # the driver and every Ray process it started
            job.wait()
        partial = store.read(["movie_id"])["movie_id"].to_pylist()
        assert 0 < len(partial) < 80

        request.getfixturevalue("ray_local")
        parser = argparse.ArgumentParser()
        add_arguments(parser)
        config = dataclass_from_args(ScrapeConfig, parser.parse_args(["--workspace", str(ws), *flags]))
        summary = scrape(ws, config, Credentials(token="t0k"))
        assert summary["requested_this_run"] == 80 - len(set(partial))  # finished ones were not redone

    table = store.read()
    assert sorted(table["movie_id"].to_pylist()) == list(range(1, 81))
    assert set(table["status"].to_pylist()) == {"ok"}
    assert not [p for p in (ws / "tmdb").iterdir() if p.name.startswith(".")]
