"""`armor serve` on Ray Serve: the champion over HTTP (the same top-K as `mlflow models serve`), bad input as
4xx, and the alias followed under load."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

from armor.config import FusionConfig, TrainConfig
from armor.models.registry import ModelSettings
from armor.retrieval.index import ItemIndex
from armor.tracking.service import BadRequest, parse_request
from pipelines.register import register
from pipelines.tracking import Tracking
from pipelines.train import Placement, TrainJob, train
from tests.processes import free_port
from tests.workspaces import make_workspace

SETTINGS = ModelSettings.of(fusion=FusionConfig(dim=16, out_dim=8, heads=2),
                            train=TrainConfig(batch_size=64, epochs=2, steps_per_epoch=3))


def test_requests_are_checked_before_they_reach_the_model():
    ok = parse_request(b'{"history": [1, 2, 3], "ratings": [5, 2, 4.5], "k": 3}', max_k=100, max_body=1000)
    assert ok.history == [1, 3] and ok.k == 3 and ok.exclude_seen  # the 2-star movie is not a liked one
    assert parse_request(b'{"user_id": 7, "k": 2}', max_k=100, max_body=1000).user_id == 7
    assert parse_request(b'{"history": []}', max_k=100, max_body=1000).history == []  # popularity answers it
    cases = [(b"{not json", 400, "not JSON"), (b"[1, 2]", 400, "JSON object"),
             (b'{"history": "1,2"}', 400, "list of movie ids"), (b'{"history": [1.5]}', 400, "not an integer"),
             (b'{"history": [1], "k": 0}', 400, r"k: 0 is outside 1\.\.100"),
             (b'{"history": [1], "k": 101}', 400, "outside"), (b'{"k": 3}', 400, "exactly one of"),
             (b'{"history": [1], "user_id": 3}', 400, "exactly one of"), (b'{"user_id": "7"}', 400, "not an integer"),
             (b'{"history": [1], "user": 3}', 400, "unknown field"), (b'{"history": [1], "ratings": [5, 4]}', 400,
                                                                       "one per history id"),
             (b'{"history": [' + b"1, " * 600 + b"1]}", 413, "over the limit")]
    for body, status, message in cases:
        with pytest.raises(BadRequest, match=message) as caught:
            parse_request(body, max_k=100, max_body=1000)
        assert caught.value.status == status, body[:40]


def post(url: str, body: bytes) -> tuple[int, dict]:
    request = urllib.request.Request(f"{url}/recommend", data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def answer_of(url: str, movies: list[int], k: int) -> list[dict]:
    status, answer = post(url, json.dumps({"history": movies, "k": k}).encode())
    assert status == 200, answer
    return answer["recommendations"]


def mlflow_server_answers(uri: str, movies: list[int], k: int) -> list[int]:
    """The top-k of `mlflow models serve` on the same champion, for the same history."""
    port = free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "MLFLOW_DISABLE_TELEMETRY": "true",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "models", "serve", "-m",
                               "models:/armor-item-embeddings@champion", "--env-manager", "local", "-h", "127.0.0.1",
                               "-p", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2).close()
                break
            except OSError:
                assert time.monotonic() < deadline and server.poll() is None, "mlflow models serve did not start"
                time.sleep(0.5)
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations", headers={"Content-Type": "application/json"},
            data=json.dumps({"dataframe_records": [{"history": movies}], "params": {"k": k}}).encode())
        with urllib.request.urlopen(request, timeout=30) as reply:
            return [row["movie_id"] for row in json.loads(reply.read())["predictions"]]
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


@pytest.mark.ray
@pytest.mark.slow
def test_the_champion_is_served_bad_input_gets_4xx_and_a_moved_alias_drops_nothing(tmp_path):
    import ray
    from ray import serve

    from pipelines.serve import start

    ws = make_workspace(tmp_path / "ws")
    train(TrainJob(workspace=str(ws), model="text", settings=SETTINGS), Placement(local=True), Tracking())
    train(TrainJob(workspace=str(ws), model="text-projected", settings=SETTINGS), Placement(local=True), Tracking())
    first, _, uri = register(ws, "random/text", promote=True)
    index = ItemIndex.from_parquet(ws / "models" / "random" / "text" / "item_embeddings.parquet")
    movies = index.movie_ids[:3].tolist()

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        url = start("models:/armor-item-embeddings@champion", uri, port=free_port(), follow_seconds=0.5)
        with urllib.request.urlopen(f"{url}/healthz", timeout=30) as reply:
            assert json.loads(reply.read())["version"] == first
        status, answer = post(url, json.dumps({"history": [*movies, 999_999], "k": 5}).encode())
        assert status == 200 and answer["version"] == first and answer["skipped"] == [999_999]
        assert [r["movie_id"] for r in answer["recommendations"]] == index.recommend(movies, 5)[0].tolist()
        for body, code in ((b"{oops", 400), (b'{"history": [999999]}', 422), (b'{"user_id": 999999}', 404),
                           (json.dumps({"history": movies, "k": 0}).encode(), 400),
                           (b'{"history": [' + b"1," * 40_000 + b"1]}", 413)):
            status, answer = post(url, body)
            assert status == code and answer["error"], (body[:30], status, answer)
        assert post(url, json.dumps({"history": movies}).encode())[0] == 200  # the replica is alive
        # A user of the split, by id: answered from their train + validation positives.
        split = pd.concat(pd.read_parquet(ws / "splits" / "random" / f"{p}.parquet") for p in ("train", "valid"))
        user = int(split["user_id"].iloc[0])
        liked = split.loc[split["user_id"] == user, "movie_id"].tolist()
        status, answer = post(url, json.dumps({"user_id": user, "k": 5}).encode())
        assert status == 200 and answer["used"] == len(liked) and answer["skipped"] == []  # all in the catalogue
        assert [r["movie_id"] for r in answer["recommendations"]] == index.recommend(liked, 5)[0].tolist()
        # An empty history: the split's most liked movies.
        status, answer = post(url, b'{"history": [], "k": 3}')
        counts = split["movie_id"].value_counts()
        top = sorted(counts.index, key=lambda m: (-counts[m], m))[:3]
        assert status == 200 and answer["source"] == "popularity"
        assert [r["movie_id"] for r in answer["recommendations"]] == top
        assert mlflow_server_answers(uri, movies, 5) == [r["movie_id"] for r in answer_of(url, movies, 5)]

        seen, errors, stop = set(), [], threading.Event()

        def load() -> None:
            while not stop.is_set():
                status, answer = post(url, json.dumps({"history": movies, "k": 5}).encode())
                (seen.add(answer["version"]) if status == 200 else errors.append((status, answer)))

        clients = [threading.Thread(target=load) for _ in range(4)]
        for client in clients:
            client.start()
        time.sleep(1.0)
        # The challenger becomes champion only by a better validation score; force it for the test.
        second, _, _ = register(ws, "random/text-projected", promote=False)
        from mlflow import MlflowClient

        from armor.tracking.registry import CHAMPION
        MlflowClient(tracking_uri=uri, registry_uri=uri).set_registered_model_alias(
            "armor-item-embeddings", CHAMPION, second)
        deadline = time.monotonic() + 30
        while second not in seen and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(0.5)
        stop.set()
        for client in clients:
            client.join()
        assert errors == [] and seen == {first, second}
        status, answer = post(url, json.dumps({"history": movies}).encode())
        assert answer["version"] == second
    finally:
        serve.shutdown()
        ray.shutdown()
