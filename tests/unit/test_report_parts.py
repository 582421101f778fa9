"""The report's parts beyond Table 1, each on data small enough to check by hand: all-pairs tests with
Holm's adjustment, results by user activity, learning curves, the figures' colours and legends, the
top-5 user figure, the t-SNE note, the tuning budget's times, and provenance.json."""

import datetime
import json
import subprocess

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import scipy.sparse as sp

from armor.config import EvalConfig
from armor.data.splits import SplitData
from armor.eval import beyond, claims, figures, provenance, showcase, significance
from armor.eval import metrics as M
from armor.eval.protocol import EvaluationResult, evaluate
from armor.workspace import Workspace
from tests.fixed_scores import FixedScores

NOW = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)


def result(name, values, users=None, seconds=0.0):
    values = np.asarray(values, dtype=np.float64)
    users = np.arange(values.size) if users is None else users
    return EvaluationResult(name, "test", users, {"ndcg@10": values}, {}, {}, score_seconds=seconds)


# ---- significance -----------------------------------------------------------------------------


def test_holm_adjustment_hand_computed():
    # sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04 -> running max 0.06 for the last
    adjusted = significance.holm([0.01, 0.04, 0.03, 0.005])
    assert adjusted == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert significance.holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])  # capped at 1


def test_wilcoxon_p_matches_the_exact_signed_rank_distribution():
    # five positive differences of distinct sizes: the exact two-sided p is 2 / 2^5
    assert significance.wilcoxon_p(np.array([1.0, 2, 3, 4, 5]), np.zeros(5)) == pytest.approx(2 / 32)
    assert significance.wilcoxon_p(np.ones(4), np.ones(4)) == 1.0  # no user differs
    # users where either value is undefined are left out
    assert significance.wilcoxon_p(np.array([1.0, 2, 3, 4, 5, np.nan]), np.zeros(6)) == pytest.approx(2 / 32)


def test_all_pairs_adjusts_every_pair_together_and_the_matrix_says_who_is_higher():
    rng = np.random.default_rng(0)
    base = rng.random(200)
    per_user = {"a": base + 0.2, "b": base, "c": base + rng.normal(0, 0.01, 200)}
    tests = significance.all_pairs(per_user)
    assert [(t.a, t.b) for t in tests] == [("a", "b"), ("a", "c"), ("b", "c")]
    raw = [significance.wilcoxon_p(per_user[t.a], per_user[t.b]) for t in tests]
    assert [t.p_holm for t in tests] == pytest.approx(significance.holm(raw))
    assert tests[0].significant and tests[0].difference == pytest.approx(0.2)
    assert not tests[2].significant
    text = significance.matrix_markdown(tests, {"a": "Model A", "b": "Model B", "c": "Model C"})
    rows = {line.split(" | ")[0]: line for line in text.splitlines() if line.startswith("| ")}
    assert rows["| 1. Model A"].endswith("|  |  |")  # the upper triangle stays empty
    assert "**−<0.001**" in rows["| 2. Model B"]  # B is below A: minus, bold
    c_vs_a, c_vs_b = rows["| 3. Model C"].split(" | ")[1:3]
    assert c_vs_a == "**−<0.001**" and not c_vs_b.startswith("**")  # C is below A; C and B are no different
    assert "of 3 pairs" in text and "one training seed: a significant pair is no claim" in text
    assert "mean over 3 or more training seeds" in significance.matrix_markdown(tests, {}, seeds=3)


# ---- by user activity, learning curves ----------------------------------------------------------


def activity_split():
    # 8 users with 1..8 training positives (movies 0..u) and movie 9 held out, 10 movies
    train = sp.csr_matrix(np.array([[1.0 if j <= u else 0.0 for j in range(10)] for u in range(8)], dtype=np.float32))
    test = sp.csr_matrix(np.eye(10, dtype=np.float32)[[9] * 8])
    return SplitData(np.arange(8) + 100, np.arange(10) + 1, train, sp.csr_matrix((8, 10), dtype=np.float32), test)


def test_activity_quartiles_put_ties_in_the_lower_group_and_average_each_group():
    data = activity_split()
    users = np.arange(8)
    group, headers = beyond.activity_groups(data, users)
    # sizes 1..8: cuts at 2.75, 4.5, 6.25 -> {1, 2}, {3, 4}, {5, 6}, {7, 8}
    assert group.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert headers[0] == "Q1: 1-2 positives (2 users)"
    tied = SplitData(data.user_ids, data.item_ids, sp.csr_matrix(np.ones((8, 10), dtype=np.float32)),
                     data.valid, data.test)
    assert beyond.activity_groups(tied, users)[0].tolist() == [0] * 8  # equal sizes never straddle groups
    text = beyond.activity_table({"m": result("M", [0, 1, 0, 0, 1, 1, 0.5, 0.5])}, {"m": "Model"}, data,
                                 bootstrap=0, seed=0)
    assert "| Model | 0.5000 | 0.0000 | 1.0000 | 0.5000 |" in text


def test_validation_curves_come_from_each_models_history():
    meta = {"bpr": {"history": [{"epoch": 1, "val_ndcg@10": 0.1}, {"epoch": 2, "val_ndcg@10": 0.2}],
                    "best_epoch": 2},
            "ease": {"history": []}, "old": {}}
    curves = beyond.validation_curves(meta, {"bpr": "BPR"})
    assert curves == {"BPR": ([1, 2], [0.1, 0.2], 2)}


def test_learning_section_draws_one_line_per_trained_model_and_names_the_others(tmp_path):
    meta = {"bpr": {"history": [{"epoch": e, "val_ndcg@10": 0.1 * e} for e in (1, 2, 3)], "best_epoch": 2},
            "lightgcn": {"history": [{"epoch": e, "val_ndcg@10": 0.05 * e} for e in (1, 2)], "best_epoch": 2},
            "ease": {"history": [], "valid": {"ndcg@10": 0.3}}}
    labels = {"bpr": "BPR", "lightgcn": "LightGCN", "ease": "EASE"}
    text = beyond.learning_section(meta, labels, "loo", tmp_path, {})
    assert "![learning curves, loo](learning_loo.png)" in text and "without epochs: EASE" in text
    assert (tmp_path / "learning_loo.png").read_bytes()[:4] == b"\x89PNG"
    fig = figures.learning_figure(beyond.validation_curves(meta, labels), "t")
    assert [line.get_label() for line in fig.axes[0].get_lines() if not line.get_label().startswith("_")] == \
        ["BPR", "LightGCN"]


# ---- figures ----------------------------------------------------------------------------------


def test_palette_gives_distinct_colours():
    for n in (3, 16, 25):
        colours = figures.palette(n)
        assert len({tuple(np.round(c, 4)) for c in colours}) == n


def test_bar_chart_gives_every_model_its_colour_and_keeps_the_legend_off_the_bars():
    from matplotlib.container import BarContainer

    results = []
    for i in range(14):  # as many models as the demo's table
        r = result(f"Model {i} with a long descriptive label (ours: graph + content)", np.full(5, 0.01 * (i + 1)))
        r.per_user.update({f"ndcg@{k}": r.per_user["ndcg@10"] for k in (5, 20)})
        results.append(r)
    fig = figures.bar_figure(results, "ndcg", (5, 10, 20), "NDCG@K")
    ax = fig.axes[0]
    bars = [c for c in ax.containers if isinstance(c, BarContainer)]
    assert len({tuple(np.round(c.patches[0].get_facecolor(), 4)) for c in bars}) == 14
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    legend, axes = ax.get_legend().get_window_extent(renderer), ax.get_window_extent(renderer)
    assert legend.x0 >= axes.x1  # entirely to the right of the plotting area
    # colours given by label are used as given, so one model keeps its colour across figures
    fig = figures.bar_figure(results[:2], "ndcg", (10,), "t", {results[1].model: (0.0, 0.0, 0.0, 1.0)})
    bars = [c for c in fig.axes[0].containers if isinstance(c, BarContainer)]
    assert bars[1].patches[0].get_facecolor() == (0.0, 0.0, 0.0, 1.0)


# ---- the top-5 figure and the t-SNE note --------------------------------------------------------


def showcase_split():
    # 4 users, 9 movies; movie 0 is the query. Users 0 and 2 liked it; user 2 has more held-out movies.
    train = np.zeros((4, 9), dtype=np.float32)
    train[[0, 1, 2, 2, 3], [0, 1, 0, 1, 2]] = 1
    test = np.zeros((4, 9), dtype=np.float32)
    test[[0, 1, 1, 1, 2, 2, 3], [3, 2, 3, 4, 3, 4, 5]] = 1
    return SplitData(np.array([10, 20, 30, 40]), np.arange(1, 10), sp.csr_matrix(train),
                     sp.csr_matrix((4, 9), dtype=np.float32), sp.csr_matrix(test))


def test_the_showcase_user_is_chosen_by_the_query_movie_and_held_out_count_only():
    data = showcase_split()
    assert showcase.showcase_user(data, query=0, seed=0) == 2  # liked movie 0, two held-out movies
    assert showcase.showcase_user(data, query=5, seed=0) == 1  # nobody liked movie 5: most held-out overall


def test_user_top_k_is_the_evaluations_ranking():
    data = showcase_split()
    scores = np.array([[8, 7, 6, 5, 4, 3, 2, 1, 0]] * 4, dtype=np.float32)
    model = FixedScores(scores)
    top = showcase.user_top_k(model, data, user=2, k=3, seed=0)
    assert top.tolist() == [2, 3, 4]  # the profile (movies 0, 1) is excluded
    one = evaluate(model, data, "test", EvalConfig(ks=(3,), bootstrap=0))
    held_out = set(data.test[2].indices.tolist())
    assert one.per_user["precision@3"][2] == pytest.approx(len(held_out & set(top.tolist())) / 3)


def test_top_k_figure_shows_each_familys_best_and_marks_held_out_hits(tmp_path):
    data = showcase_split()
    movies = pd.DataFrame({"movie_id": np.arange(1, 10), "title": [f"Movie {i}" for i in range(1, 10)],
                           "year": [1990.0] * 9, "genres": [["Drama"]] * 9}).set_index("movie_id")
    models = {"good": FixedScores(np.array([[0, 0, 1, 9, 8, 0, 0, 0, 0]] * 4)),
              "bad": FixedScores(np.array([[0, 0, 9, 0, 0, 8, 7, 6, 5]] * 4))}
    meta = {"good": {"valid": {"ndcg@10": 0.3}}, "bad": {"valid": {"ndcg@10": 0.1}},
            "also": {"valid": {"ndcg@10": 0.2}}}
    families = claims.best_per_family(meta, {"good": "hybrid", "also": "hybrid", "bad": "reference"})
    assert families == {"hybrid": "good", "reference": "bad"}
    text = showcase.top_k_figure(Workspace(tmp_path / "ws"), data, movies, models, {"good": "Good", "bad": "Bad"},
                                 families, 0, tmp_path / "top5.png", seed=0, split="random")
    assert (tmp_path / "top5.png").read_bytes()[:4] == b"\x89PNG"
    assert "test user 30, who liked Movie 1 (1990)" in text
    # user 30 holds out movies 4 and 5 (columns 3, 4): both hits for the hybrid, none for the reference
    assert "- Good (best hybrid): **\u2713 Movie 4 (1990)**; **\u2713 Movie 5 (1990)**; Movie 3 (1990)" in text
    assert "- Bad (best reference): Movie 3 (1990); Movie 6 (1990); Movie 7 (1990); Movie 8 (1990); Movie 9 (1990)" \
        in text
    assert "(2 of 10 slots)" in text


def test_the_tsne_note_says_when_overviews_are_stand_ins(tmp_path):
    from armor.tmdb.scrape import SCRAPE_SCHEMA, ScrapeStore
    from armor.tmdb.standin import WORKSPACE_TMDB_BASE

    ws = Workspace(tmp_path / "ws")
    assert showcase.standin_overviews(ws) is None
    def part(tmdb_ids):
        return pa.Table.from_pylist([{"movie_id": m, "tmdb_id": t, "status": "ok", "scraped_at": NOW}
                                     for m, t in zip(range(1, 5), tmdb_ids)], schema=SCRAPE_SCHEMA)

    ScrapeStore(ws.tmdb).write_part(part([WORKSPACE_TMDB_BASE + m for m in range(1, 5)]))
    assert showcase.standin_overviews(ws) is True
    assert "generated from each movie's genres, so clustering by genre is expected" in showcase.TSNE_NOTES[True]
    other = Workspace(tmp_path / "real")
    ScrapeStore(other.tmdb).write_part(part([603 + m for m in range(1, 5)]))  # linked to real TMDB ids
    assert showcase.standin_overviews(other) is False


# ---- tuning budget times ------------------------------------------------------------------------


def test_budget_table_gives_training_and_scoring_time():
    meta = {"bpr": {"search": {"trials": 2, "chosen": {"bpr.factors": 32}}, "seconds": 12.5, "select_seconds": 10.0,
                    "valid": {"ndcg@10": 0.05}, "epoch_cap": 10, "epochs_run": 5, "best_epoch": 3, "seeds": 1},
            "ease": {"seconds": 1.0, "valid": {"ndcg@10": 0.06}}}
    scored = result("BPR", np.zeros(2000), seconds=0.5)
    inference = {"bpr": claims.inference_per_thousand(scored), "ease": None}
    assert inference["bpr"] == pytest.approx(0.25)  # 0.5 s over 2,000 users
    text = claims.budget_markdown(claims.budget_rows(meta, {"bpr": "BPR", "ease": "EASE"}, inference))
    assert "| BPR | 2 | factors=32 | 0.0500 | 3 / 5 / 10 | - | 1 | 12.5 (10.0 + 2.5) | 0.25 |" in text
    assert "| EASE | 0 | - | 0.0600 | - | - | 1 | 1.0 | - |" in text
    meta["bpr"]["search"]["pruned"] = 1
    text = claims.budget_markdown(claims.budget_rows(meta, {"bpr": "BPR", "ease": "EASE"}, inference))
    assert "| BPR | 2 (1 stopped early) | factors=32 |" in text
    meta["fused"] = {"search": {"space_name": f"{claims.SWEEP} demo-sweep (ASHA)", "trials": 4}}
    rows = claims.budget_rows(meta, {}, inference)
    assert [row["sweep"] for row in rows] == [False, False, True]  # the caption leaves a sweep's winner out


def test_seed_average_keeps_the_mean_scoring_time():
    a, b = result("m", [0.1, 0.2], seconds=1.0), result("m", [0.3, 0.2], seconds=3.0)
    assert claims.seed_average([a, b], 0, 0).score_seconds == pytest.approx(2.0)


# ---- provenance ---------------------------------------------------------------------------------


def test_provenance_records_config_job_packages_and_commit(tmp_path):
    subprocess.run(["git", "init", "-q", str(tmp_path / "repo")], check=True)
    repo = tmp_path / "repo"
    (repo / "a.txt").write_text("a")
    git = ["git", "-C", str(repo), "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run([*git, "add", "a.txt"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "one"], check=True)
    clean = provenance.git_state(repo)
    assert len(clean["commit"]) == 40 and clean["dirty"] is False
    (repo / "a.txt").write_text("b")
    assert provenance.git_state(repo)["dirty"] is True
    record = provenance.provenance({"bootstrap": 10}, tmp_path, job={"trials": 6, "seeds": (0, 1, 2)},
                                   splits={"loo": "abc"}, root=repo)
    assert record["job"] == {"trials": 6, "seeds": [0, 1, 2]} and record["splits"] == {"loo": "abc"}
    for name in ("python", "torch", "ray", "mlflow", "numpy", "faiss", "implicit", "sentence-transformers", "pyarrow"):
        assert name in record["packages"]
    assert record["packages"]["numpy"] == np.__version__
    json.dumps(record)  # every part is JSON
    assert f"`{record['git']['commit'][:12]}` with uncommitted changes" in provenance.provenance_line(record)


def test_provenance_without_git_or_outside_a_repository_does_not_fail(tmp_path, monkeypatch):
    outside = provenance.git_state(tmp_path)
    assert outside["commit"] is None and outside["error"]
    monkeypatch.setenv("PATH", str(tmp_path))  # no git executable to be found
    missing = provenance.git_state(tmp_path)
    assert missing == {"commit": None, "dirty": None, "error": "git is not installed"}
    assert "git commit unknown (git is not installed)" in provenance.provenance_line({"git": missing})


def test_metrics_module_names_the_definitions_it_follows():
    assert "RecBole" in M.__doc__ and "Elliot" in M.__doc__
