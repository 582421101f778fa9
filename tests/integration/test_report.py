"""`armor report`: Table 1 with CIs and paper rows, figures, cold start, interpretability."""

import csv

import numpy as np
import pytest

from armor.config import BPRConfig, FusionConfig, TrainConfig
from armor.errors import DataError
from armor.eval.report import ReportConfig, make_report
from armor.models.registry import ModelSettings
from pipelines.train import Placement, TrainJob, train
from tests.workspaces import make_workspace

pytestmark = pytest.mark.slow

MODELS = ("text", "image", "fused", "fused-paper", "bpr", "popularity", "random")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    ws = make_workspace(tmp_path_factory.mktemp("report") / "ws", missing_thumbnails=0.1)
    for model in MODELS:
        settings = ModelSettings.of(fusion=FusionConfig(dim=32, out_dim=16, heads=2),
                                    train=TrainConfig(batch_size=64, epochs=6, steps_per_epoch=8),
                                    bpr=BPRConfig(factors=16, iterations=60))
        train(TrainJob(workspace=str(ws), split="random", model=model, settings=settings), Placement(local=True))
    return ws


def test_report_has_table1_paper_rows_figures_and_interpretability(trained):
    out = make_report(trained, ReportConfig(bootstrap=100))
    text = (out / "report.md").read_text()
    assert "## Table 1 (reproduced)" in text and "The paper's Table 1" in text
    assert "| Fused, paper's attention (eqs. 4.2-4.6) | 0.0040 | 0.0120 | 0.0360 |" in text  # the paper's row
    assert "Full minus paper fusion, test NDCG@10" in text
    assert "share of movies where it leads" in text
    for figure in ("recall.png", "ndcg.png", "top5.png", "tsne_text.png"):
        assert (out / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = list(csv.DictReader((out / "table1.csv").open()))
    assert {r["model"] for r in rows} == {"Text-only (raw features)", "Image-only (raw features)",
                                          "Fused, full attention (ours)", "Fused, paper's attention (eqs. 4.2-4.6)",
                                          "BPR", "Popularity", "Random"}
    assert all(r["split"] == "test" and r["protocol"] == "random" for r in rows)
    for r in rows:  # every reported mean lies inside its CI
        assert float(r["ndcg@10_lo"]) <= float(r["ndcg@10"]) <= float(r["ndcg@10_hi"])
    score = {r["model"]: float(r["ndcg@10"]) for r in rows}
    assert score["Fused, full attention (ours)"] > 3 * score["Random"]


def test_cold_start_table_ranks_unseen_movies_only_with_content(trained, tmp_path):
    # Hide every training interaction of 15 movies: content models can still rank them.
    import pyarrow.parquet as pq

    split = trained / "splits" / "random"
    train_table = pq.read_table(split / "train.parquet")
    test_table = pq.read_table(split / "test.parquet")
    from armor.data.benchmark import load_benchmark

    catalogue = load_benchmark(trained, "random").data.item_ids
    test_movies = np.unique(test_table["movie_id"].to_numpy())
    cold = test_movies[np.isin(test_movies, catalogue)][:15]
    keep = ~np.isin(train_table["movie_id"].to_numpy(), cold)
    pq.write_table(train_table.filter(keep), split / "train.parquet")
    try:
        for model in ("text", "popularity"):
            train(TrainJob(workspace=str(trained), split="random", model=model, name=f"cold-{model}"),
                  Placement(local=True))
        out = make_report(trained, ReportConfig(models=("cold-text", "cold-popularity"), bootstrap=0),
                          out=tmp_path / "r")
    finally:
        pq.write_table(train_table, split / "train.parquet")
    text = (out / "report.md").read_text()
    assert "## Cold start: 15 test movies nobody liked in training" in text
    lines = [line for line in text.splitlines() if line.startswith("| cold-")]
    cold_rows = {line.split("|")[1].strip(): line for line in lines[-2:]}
    recall_text = float(cold_rows["cold-text"].split("|")[3])
    recall_popularity = float(cold_rows["cold-popularity"].split("|")[3])
    assert recall_popularity == 0.0 and recall_text > 0.0


def test_a_model_trained_on_another_catalogue_is_refused(trained):
    with pytest.raises(DataError, match="no trained model"):
        make_report(trained, ReportConfig(models=("nonexistent",), bootstrap=0))
