"""MLflow tracking against a real `mlflow server` (mlflow/server.sh) and a plain SQLite store.

The server runs as a subprocess on a free port of 127.0.0.1 with its SQLite database and
artifacts in a temporary directory; the fixture always stops it by its own PID (and the PIDs of
the workers it started).
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
import re
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from armor.config import TrainConfig
from armor.io import write_parquet
from armor.models.base import EmbeddingRecommender
from armor.retrieval import ItemIndex
from armor.tracking import (
    CHALLENGER,
    CHAMPION,
    DEFAULT_MODEL_NAME,
    RequestError,
    alias_version,
    answer_requests,
    child_runs,
    ensure_experiment,
    load_registered_model,
    nested_run,
    promote,
    recommend_from_registry,
    register_embeddings,
    start_run,
    tracking_uri,
    version_metric,
    with_retries,
)
from armor.tracking.serving import Profiles
from armor.workspace import write_model

ROOT = Path(__file__).resolve().parents[2]
EPOCHS = 50
TRIALS = 4


# ---------------------------------------------------------------------------- concurrent trials
@dataclasses.dataclass(frozen=True)
class TrialConfig:
    trial: int
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)


def expected_loss(trial: int, epoch: int) -> float:
    return 1.0 / (epoch + trial)


def log_trial(uri: str, parent_run_id: str, trial: int) -> str:
    """One Tune-like trial in its own process: a child run, logged epoch by epoch as training would."""
    # All trials also race to create the same experiment: one id must come back to all of them.
    experiment_id = ensure_experiment("armor-race", uri)
    config = TrialConfig(trial=trial, train=TrainConfig(lr=10.0 ** -(trial + 2), margin=0.1 * (trial + 1)))
    with nested_run(parent_run_id, uri, config, run_name=f"trial-{trial}") as run:
        for epoch in range(1, EPOCHS + 1):
            run.log_metrics({"loss": expected_loss(trial, epoch), "val_ndcg@10": epoch / 1000 + trial,
                             "note": "strings are skipped"}, step=epoch)
        run.set_tags({"armor.race_experiment": experiment_id})
    return run.run_id


def run_and_check_concurrent_trials(uri: str) -> None:
    ensure_experiment("armor", uri)  # on the driver, before any trial
    sweep = {"sweep": {"trials": TRIALS, "epochs": EPOCHS}}
    with start_run("armor", uri, sweep, run_name="sweep") as parent, \
            multiprocessing.get_context("spawn").Pool(TRIALS) as pool:
        run_ids = pool.starmap(log_trial, [(uri, parent.run_id, t) for t in range(TRIALS)])

    client = MlflowClient(tracking_uri=uri)
    children = child_runs(parent.run_id, uri)
    assert sorted(r.info.run_id for r in children) == sorted(run_ids) and len(set(run_ids)) == TRIALS
    assert client.get_run(parent.run_id).data.params == {"sweep.trials": str(TRIALS), "sweep.epochs": str(EPOCHS)}
    race_ids = set()
    logged = 0
    for run in children:
        assert run.info.status == "FINISHED" and run.info.experiment_id == parent.experiment_id
        trial = int(run.data.params["trial"])
        assert run.data.tags["mlflow.parentRunId"] == parent.run_id
        assert run.data.params["train.lr"] == str(10.0 ** -(trial + 2))  # nested dataclass, dotted key
        assert run.data.params["train.mining"] == "semi-hard"
        loss = client.get_metric_history(run.info.run_id, "loss")
        ndcg = client.get_metric_history(run.info.run_id, "val_ndcg_at_10")
        assert sorted(m.step for m in loss) == list(range(1, EPOCHS + 1))
        assert sorted(m.step for m in ndcg) == list(range(1, EPOCHS + 1))
        assert {m.step: m.value for m in loss} == pytest.approx(
            {e: expected_loss(trial, e) for e in range(1, EPOCHS + 1)})
        assert set(run.data.metrics) == {"loss", "val_ndcg_at_10"}
        logged += len(loss) + len(ndcg)
        race_ids.add(run.data.tags["armor.race_experiment"])
    assert logged == TRIALS * EPOCHS * 2
    assert len(race_ids) == 1


@pytest.mark.slow
@pytest.mark.network
def test_concurrent_trials_under_one_parent_run_log_every_metric(mlflow_server):
    run_and_check_concurrent_trials(mlflow_server.url)


@pytest.mark.slow
def test_concurrent_trials_on_one_sqlite_file(tmp_path):
    """Not the recommended set-up (use a server), but it must not lose a metric either."""
    run_and_check_concurrent_trials(tracking_uri(tmp_path / "ws"))


# ---------------------------------------------------------------------------- registry + pyfunc
class FixedEmbeddings(EmbeddingRecommender):
    name = "test-tracking-fixed"

    def __init__(self, items=None):
        self.items = items

    def fit(self, train, valid=None):
        return self

    def item_embeddings(self):
        return self.items

    def arrays(self):
        return {"items": self.items}

    def load_arrays(self, arrays):
        self.items = arrays["items"]


def trained_model_dir(directory: Path, seed: int, ndcg: float) -> Path:
    """A model dir exactly as `armor train` writes it (armor.workspace.write_model)."""
    rng = np.random.default_rng(seed)
    movie_ids = np.arange(1, 301) * 7  # not 0..n-1: ids and catalogue positions differ
    summary = {"name": directory.name, "valid": {"ndcg@10": ndcg, "recall@10": ndcg * 1.5}, "history": []}
    write_model(FixedEmbeddings(rng.standard_normal((300, 16)).astype(np.float32)), movie_ids, summary, directory)
    return directory


HISTORIES = [[7, 14, 21], [700, 1400], [2100], [7 * i for i in range(100, 140)]]


@pytest.mark.slow
@pytest.mark.network
def test_registry_promotion_and_the_champion_pyfunc(mlflow_server, tmp_path):
    uri = mlflow_server.url
    weaker = trained_model_dir(tmp_path / "models" / "text", seed=1, ndcg=0.20)
    better = trained_model_dir(tmp_path / "models" / "fused", seed=2, ndcg=0.35)
    later = trained_model_dir(tmp_path / "models" / "image", seed=3, ndcg=0.25)
    movies = write_parquet(pa.table({"movie_id": pa.array(np.arange(1, 301) * 7, pa.int32()),
                                     "title": [f"Movie {i}" for i in range(300)],
                                     "year": pa.array([1990 + i % 30 for i in range(300)], pa.int32())}),
                           tmp_path / "movies.parquet")
    before = (mlflow.get_tracking_uri(), os.environ.get("MLFLOW_TRACKING_URI"))

    v1 = register_embeddings(weaker, uri=uri)  # metrics from the model dir's metrics.json
    assert version_metric(DEFAULT_MODEL_NAME, v1, uri) == pytest.approx(0.20)
    assert alias_version(DEFAULT_MODEL_NAME, CHALLENGER, uri) == v1
    assert alias_version(DEFAULT_MODEL_NAME, CHAMPION, uri) is None
    assert promote(DEFAULT_MODEL_NAME, v1, uri) is True  # no champion yet
    assert alias_version(DEFAULT_MODEL_NAME, CHAMPION, uri) == v1

    # Registered from inside its training run: the run gets the model and its validation metrics.
    with start_run("armor", uri, TrainConfig(), run_name="train-fused") as training:
        training.log_epoch_metrics([{"epoch": e, "loss": 1.0 / e} for e in range(1, 4)])
    v2 = register_embeddings(better, uri=uri, run_id=training.run_id)
    assert int(v2) == int(v1) + 1
    assert promote(DEFAULT_MODEL_NAME, v2, uri) is True
    assert alias_version(DEFAULT_MODEL_NAME, CHAMPION, uri) == v2

    v3 = register_embeddings(later, uri=uri, movies=movies)
    assert alias_version(DEFAULT_MODEL_NAME, CHALLENGER, uri) == v3
    assert promote(DEFAULT_MODEL_NAME, v3, uri) is False  # 0.25 does not beat 0.35
    assert alias_version(DEFAULT_MODEL_NAME, CHAMPION, uri) == v2
    assert promote(DEFAULT_MODEL_NAME, v1, uri) is False
    assert alias_version(DEFAULT_MODEL_NAME, CHAMPION, uri) == v2

    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(training.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.metrics["val_ndcg_at_10"] == pytest.approx(0.35)
    assert len(client.get_metric_history(training.run_id, "loss")) == 3
    assert client.get_model_version(DEFAULT_MODEL_NAME, v2).run_id == training.run_id
    assert (mlflow.get_tracking_uri(), os.environ.get("MLFLOW_TRACKING_URI")) == before  # no global change

    # The champion answers what in-process retrieval over the same embeddings answers.
    index = ItemIndex.from_parquet(better / "item_embeddings.parquet")
    check_champion_answers(index, uri)

    titled = load_registered_model(f"models:/{DEFAULT_MODEL_NAME}/{v3}", uri).predict(pd.DataFrame({"movie_id": [7]}))
    later_ids = ItemIndex.from_parquet(later / "item_embeddings.parquet").similar([7], 10)[0][0]
    assert titled["movie_id"].tolist() == later_ids.tolist()
    assert titled["title"].tolist() == [f"Movie {m // 7 - 1} ({1990 + (m // 7 - 1) % 30})" for m in later_ids]

    check_champion_from_the_command_line(index, uri, tmp_path)


def check_champion_answers(index: ItemIndex, uri: str) -> None:
    """The champion pyfunc, loaded from the registry, answers as ``index`` does in process."""
    champion = load_registered_model(f"models:/{DEFAULT_MODEL_NAME}@{CHAMPION}", uri)
    requests = pd.DataFrame({"history": [HISTORIES[0], "700, 1400", HISTORIES[2], HISTORIES[3], None],
                             "movie_id": [None, None, None, None, 70], "k": [5, None, 3, None, 4]})
    answer = champion.predict(requests, params={"k": 8})
    assert list(answer.columns) == ["query", "rank", "movie_id", "score", "source", "skipped", "error"]
    for row, (history, k) in enumerate(zip(HISTORIES, [5, 8, 3, 8])):
        ids, scores = index.recommend(history, k)
        got = answer[answer["query"] == row]
        assert got["rank"].tolist() == list(range(1, k + 1))
        assert got["movie_id"].tolist() == ids.tolist() and not set(ids.tolist()) & set(history)
        np.testing.assert_array_equal(got["score"].to_numpy(), scores.astype(np.float64))
    similar_ids = index.similar([70], 4)[0][0]
    assert answer[answer["query"] == 4]["movie_id"].tolist() == similar_ids.tolist()

    top = recommend_from_registry(f"models:/{DEFAULT_MODEL_NAME}@{CHAMPION}", HISTORIES[0], k=6, uri=uri)
    assert top["movie_id"].tolist() == index.recommend(HISTORIES[0], 6)[0].tolist()
    assert list(top.columns) == ["rank", "movie_id", "score"]
    # One unknown id (8) is left out and named; it fails neither its row nor the batch.
    mixed = champion.predict(pd.DataFrame({"history": [[7, 8], HISTORIES[0], [8]]}), params={"k": 3})
    assert mixed[mixed["query"] == 0]["movie_id"].tolist() == index.recommend([7], 3)[0].tolist()
    assert set(mixed[mixed["query"] == 0]["skipped"]) == {"8"}
    assert mixed[mixed["query"] == 1]["movie_id"].tolist() == index.recommend(HISTORIES[0], 3)[0].tolist()
    assert mixed[mixed["query"] == 2]["error"].tolist() == [
        "row 2: none of the history's movie ids is in the index's catalogue: 8"]


def check_champion_from_the_command_line(index: ItemIndex, uri: str, tmp_path: Path) -> None:
    """The same champion from the command line, on a JSON and on a CSV request file."""
    (tmp_path / "input.json").write_text(json.dumps({
        "dataframe_records": [{"history": HISTORIES[0]}, {"history": "700,1400"}, {"movie_id": 70}],
        "params": {"k": 6}}))
    pd.DataFrame({"history": ["7,14,21", "2100"], "k": [2, 5]}).to_csv(tmp_path / "input.csv", index=False)
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "MLFLOW_DISABLE_TELEMETRY": "true"}
    for name, content_type in (("input.json", "json"), ("input.csv", "csv")):
        out = tmp_path / f"{name}.out"
        subprocess.run([sys.executable, "-m", "mlflow", "models", "predict", "-m",
                        f"models:/{DEFAULT_MODEL_NAME}@{CHAMPION}", "-i", str(tmp_path / name), "-t", content_type,
                        "--env-manager", "local", "-o", str(out)], check=True, env=env, cwd=tmp_path, timeout=180)
        predictions = pd.DataFrame(json.loads(out.read_text())["predictions"])
        if content_type == "json":
            want = answer_requests(index, pd.DataFrame({"history": [HISTORIES[0], [700, 1400], None],
                                                        "movie_id": [None, None, 70]}), k=6)
        else:
            want = answer_requests(index, pd.DataFrame({"history": [[7, 14, 21], [2100]], "k": [2, 5]}))
        assert predictions["movie_id"].tolist() == want["movie_id"].tolist()
        assert predictions["query"].tolist() == want["query"].tolist()
        np.testing.assert_allclose(predictions["score"], want["score"], rtol=1e-12)


def test_pyfunc_requests_are_checked_row_by_row():
    rng = np.random.default_rng(0)
    index = ItemIndex(np.array([3, 5, 8, 13]), rng.standard_normal((4, 4)).astype(np.float32))
    ok = answer_requests(index, pd.DataFrame({"history": ["[3, 5]", np.array([8])]}), k=2)
    assert ok["query"].tolist() == [0, 0, 1, 1]
    assert ok["movie_id"].tolist()[:2] == index.recommend([3, 5], 2)[0].tolist()
    rows = [
        (pd.DataFrame({"history": [[3], [5]], "movie_id": [None, 8]}), 1, "row 1: give exactly one"),
        (pd.DataFrame({"history": ["3,x"]}), 0, r"row 0: history '3,x': 'x' is not a movie id"),
        (pd.DataFrame({"history": [[3.5]]}), 0, "3.5 is not a movie id"),
        (pd.DataFrame({"movie_id": [3], "k": [0]}), 0, r"row 0: k: 0 is not a positive integer"),
        (pd.DataFrame({"movie_id": [3, 99]}), 1, r"row 1: movie_id 99 is not in the index's catalogue"),
        (pd.DataFrame({"history": [[5], []]}), 1, "row 1: history is empty"),
    ]
    for frame, bad, message in rows:  # the bad row says why; every other row is answered
        answer = answer_requests(index, frame)
        errors = answer[answer["error"] != ""]
        assert errors["query"].tolist() == [bad] and errors["movie_id"].tolist() == [-1]
        assert re.search(message, errors["error"].iloc[0]), errors["error"].iloc[0]
        assert set(answer[answer["error"] == ""]["query"]) == set(range(len(frame))) - {bad}
    partial = answer_requests(index, pd.DataFrame({"history": [[3, 99, 5, 77]]}), k=2)
    assert partial["movie_id"].tolist() == index.recommend([3, 5], 2)[0].tolist()
    assert set(partial["skipped"]) == {"99,77"} and set(partial["error"]) == {""}
    for frame, message in ((pd.DataFrame({"title": ["Heat"]}), "need a 'history', 'user_id' or 'movie_id' column"),):
        with pytest.raises(RequestError, match=message):
            answer_requests(index, frame)
    # Asking for more than the catalogue holds returns what there is, never a padding id.
    assert answer_requests(index, pd.DataFrame({"history": [[3]]}), k=10)["movie_id"].tolist() \
        == index.recommend([3], 10)[0][:3].tolist()


def test_pyfunc_knows_the_split_users_and_answers_an_empty_history_by_popularity():
    rng = np.random.default_rng(0)
    index = ItemIndex(np.array([3, 5, 8, 13]), rng.standard_normal((4, 4)).astype(np.float32))
    # User 1 liked 5 and 8, user 2 liked 8 and 13, user 7 liked 8: 8 is the most liked, then 5 and 13 (by id).
    profiles = Profiles(np.array([1, 2, 1, 7, 2]), np.array([5, 8, 8, 8, 13]))
    assert profiles.history(1) == [5, 8] and profiles.history(99) is None
    answer = answer_requests(index, pd.DataFrame({"user_id": [1, None, 99, None],
                                                  "history": [None, [], None, [3]]}), k=2, profiles=profiles)
    by_row = {row: part for row, part in answer.groupby("query")}
    assert by_row[0]["movie_id"].tolist() == index.recommend([5, 8], 2)[0].tolist()  # user 1's own history
    assert set(by_row[0]["source"]) == {"embeddings"}
    assert by_row[1]["movie_id"].tolist() == [8, 5] and set(by_row[1]["source"]) == {"popularity"}
    np.testing.assert_allclose(by_row[1]["score"], [3 / 3, 1 / 3])  # the share of the 3 known users
    assert by_row[2]["error"].tolist() == ["row 2: user_id 99 is not one of the 3 users this model knows; send "
                                           "the user's history instead"]
    assert by_row[3]["movie_id"].tolist() == index.recommend([3], 2)[0].tolist()
    # Without profiles a user id cannot be looked up and an empty history has no fallback.
    bare = answer_requests(index, pd.DataFrame({"user_id": [1], "history": [None]}))
    assert "registered without its users' profiles" in bare["error"].iloc[0]


# ---------------------------------------------------------------------------- SQLite, no server
def test_sqlite_store_logs_and_reads_back(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    workspace = tmp_path / "ws"
    uri = tracking_uri(workspace)
    assert uri == f"sqlite:///{workspace.resolve()}/mlflow.db" and uri.startswith("sqlite:////")
    assert tracking_uri(workspace, "http://127.0.0.1:1") == "http://127.0.0.1:1"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:2")
    assert tracking_uri(workspace) == "http://127.0.0.1:2"
    assert tracking_uri(workspace, "http://127.0.0.1:1") == "http://127.0.0.1:1"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")

    experiment_id = ensure_experiment("armor", uri)
    assert ensure_experiment("armor", uri) == experiment_id  # idempotent
    (tmp_path / "report").mkdir()
    (tmp_path / "report" / "table1.md").write_text("| model | ndcg@10 |\n")
    with start_run("armor", uri, TrainConfig(epochs=3), run_name="smoke") as run:
        assert run.log_epoch_metrics([{"epoch": e, "loss": 1.0 / e, "val_ndcg@10": e / 10, "seconds": "n/a"}
                                      for e in (1, 2, 3)]) == 6
        run.log_artifacts(tmp_path / "report", "report")
    assert (workspace / "mlflow.db").is_file()
    client = MlflowClient(tracking_uri=uri)
    stored = client.get_run(run.run_id)
    assert stored.info.status == "FINISHED" and stored.info.run_name == "smoke"
    assert stored.data.params["epochs"] == "3" and stored.data.params["objective"] == "triplet"
    assert [(m.step, m.value) for m in client.get_metric_history(run.run_id, "val_ndcg_at_10")] == \
        [(1, 0.1), (2, 0.2), (3, pytest.approx(0.3))]
    # Artifacts land next to the database, not in the working directory.
    assert (workspace / "mlartifacts").is_dir()
    assert [f.path for f in client.list_artifacts(run.run_id, "report")] == ["report/table1.md"]

    with pytest.raises(ZeroDivisionError), start_run("armor", uri, run_name="broken") as failing:
        1 / 0  # noqa: B018 - the failure under test
    assert client.get_run(failing.run_id).info.status == "FAILED"


def test_database_locked_is_retried_and_other_errors_are_not():
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            try:
                raise RuntimeError("(sqlite3.OperationalError) database is locked")
            except RuntimeError as cause:  # as MLflow wraps SQLAlchemy's error
                raise MlflowException(f"SQLAlchemy database error: {cause}") from cause
        return "written"

    assert with_retries(flaky, base_delay=0.001) == "written" and len(calls) == 3

    def broken():
        calls.append(1)
        raise MlflowException("INVALID_PARAMETER_VALUE: bad metric name")

    calls.clear()
    with pytest.raises(MlflowException, match="bad metric name"):
        with_retries(broken, base_delay=0.001)
    assert len(calls) == 1

    def always_locked():
        raise MlflowException("database is locked")

    with pytest.raises(MlflowException, match="database is locked"):
        with_retries(always_locked, attempts=3, base_delay=0.001)


@pytest.mark.slow
def test_champions_are_kept_per_protocol_and_scores_of_different_splits_never_compete(tmp_path):
    """A leave-one-out score (several times lower) never competes with an 80/10/10 one: each protocol
    has its own champion, and @champion is the 80/10/10 one."""
    from armor.tracking.registry import champion_alias

    uri = "sqlite:///" + str(tmp_path / "mlflow.db")
    random_weak = register_embeddings(trained_model_dir(tmp_path / "r1", seed=1, ndcg=0.20), uri=uri,
                                      protocol="random")
    assert promote(DEFAULT_MODEL_NAME, random_weak, uri) is True
    loo = register_embeddings(trained_model_dir(tmp_path / "l1", seed=2, ndcg=0.05), uri=uri, protocol="loo")
    # 0.05 does not beat 0.20, but it is not compared with it: it is the first leave-one-out version.
    assert promote(DEFAULT_MODEL_NAME, loo, uri) is True
    assert alias_version(DEFAULT_MODEL_NAME, champion_alias("loo"), uri) == loo
    assert alias_version(DEFAULT_MODEL_NAME, CHAMPION, uri) == random_weak  # @champion is @champion-random
    random_strong = register_embeddings(trained_model_dir(tmp_path / "r2", seed=3, ndcg=0.25), uri=uri,
                                        protocol="random")
    assert promote(DEFAULT_MODEL_NAME, random_strong, uri) is True
    assert alias_version(DEFAULT_MODEL_NAME, CHAMPION, uri) == random_strong
    assert alias_version(DEFAULT_MODEL_NAME, champion_alias("random"), uri) == random_strong
    loo_weaker = register_embeddings(trained_model_dir(tmp_path / "l2", seed=4, ndcg=0.04), uri=uri,
                                     protocol="loo")
    assert promote(DEFAULT_MODEL_NAME, loo_weaker, uri) is False  # compared with 0.05 only
    assert alias_version(DEFAULT_MODEL_NAME, champion_alias("loo"), uri) == loo
