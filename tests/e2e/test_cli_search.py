"""`armor train --trials N --seeds ...`: the equal-budget search on validation, the refit on train +
validation for the epoch count validation chose, one model per seed, and what metrics.json records."""

from __future__ import annotations

import json

import numpy as np

from armor.data.splits import load_split_data
from armor.eval.protocol import profile
from armor.models.base import load_recommender
from pipelines.__main__ import main


def test_search_refit_and_seeds(tmp_path, capsys):
    ws = tmp_path / "ws"
    assert main(["data", "synth", "--size", "tiny", "--out", str(tmp_path / "synth"), "--no-content"]) == 0
    assert main(["data", "prepare", "--movielens", str(tmp_path / "synth"), "--out", str(ws)]) == 0
    assert main(["data", "split", "--workspace", str(ws), "--method", "random"]) == 0
    assert main(["train", "--workspace", str(ws), "--split", "random", "--model", "bpr", "--local", "--no-tracking",
                 "--trials", "3", "--seeds", "4", "5", "--keep-fold-in", "--bpr-iterations", "40"]) == 0, \
        capsys.readouterr().err
    models = ws / "models" / "random"
    assert sorted(p.name for p in models.iterdir()) == ["bpr", "bpr.seed5", "bpr~fold-in"]
    meta = json.loads((models / "bpr" / "metrics.json").read_text())
    search = meta["search"]
    assert search["trials"] == 3 and len(search["table"]) == 3
    # The chosen point is the best trial by validation, and the saved settings are the chosen ones.
    best = max(search["table"], key=lambda row: row["valid_ndcg@10"])
    assert search["chosen"] == {k: best[k] for k in search["chosen"]}
    for key, value in search["chosen"].items():
        section, field = key.split(".")
        assert meta["settings"][section][field] == value
    assert meta["settings"]["bpr"]["seed"] == 4 and meta["seed"] == 4
    seed5 = json.loads((models / "bpr.seed5" / "metrics.json").read_text())
    assert seed5["settings"]["bpr"] == {**meta["settings"]["bpr"], "seed": 5} and seed5["seed"] == 5
    # The refit trained on train + validation for the epoch count validation chose, with no validation.
    assert meta["refit"] == {"on": "train+valid", "epochs": meta["best_epoch"]}
    refit, fold_in = (load_recommender(models / name / "model") for name in ("bpr", "bpr~fold-in"))
    assert len(refit.history) == meta["best_epoch"] and all("val_ndcg@10" not in h for h in refit.history)
    data = load_split_data(ws / "splits" / "random", ws / "movies.parquet")
    users = np.arange(20)
    assert not np.allclose(refit.score(users, profile(data, "test")[users]),
                           fold_in.score(users, profile(data, "test")[users]))
    # Two seeds, two different models.
    other = load_recommender(models / "bpr.seed5" / "model")
    assert not np.allclose(refit.score(users, data.train[users]), other.score(users, data.train[users]))
