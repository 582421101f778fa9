"""The `armor` command line: data preparation, splitting, evaluation and the demo, end to end."""

import csv
import shutil
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from armor.data.movielens import embedded_ml100k_dir
from pipelines.__main__ import main


def test_console_script_help_lists_every_stage():
    armor = shutil.which("armor", path=str(__import__("pathlib").Path(sys.executable).parent))
    assert armor, "the `armor` console script is not installed in this environment"
    out = subprocess.run([armor, "--help"], check=True, capture_output=True, text=True).stdout
    for stage in ("data", "evaluate", "demo"):
        assert stage in out


def test_prepare_split_evaluate_on_the_embedded_ml100k(tmp_path, capsys):
    ws = tmp_path / "ws"
    assert main(["data", "prepare", "--movielens", "embedded", "--out", str(ws)]) == 0
    interactions = pq.read_table(ws / "interactions.parquet")
    movies = pq.read_table(ws / "movies.parquet")
    assert interactions.num_rows == 100_000 and movies.num_rows == 1682
    assert main(["data", "split", "--workspace", str(ws), "--method", "loo"]) == 0
    test = pq.read_table(ws / "splits" / "loo" / "test.parquet")
    assert test.num_rows == len(test.column("user_id").unique())  # one test item per user
    capsys.readouterr()
    assert main(["evaluate", "--workspace", str(ws), "--split", "loo", "--model", "popularity",
                 "--model", "random", "--on", "valid", "--bootstrap", "20"]) == 0
    table = capsys.readouterr().out
    assert "| popularity |" in table and "| random |" in table
    assert (ws / "report" / "evaluate-loo-valid.csv").read_text().count("\n") == 3


def test_synthetic_world_round_trips_through_prepare(tmp_path):
    assert main(["data", "synth", "--size", "tiny", "--out", str(tmp_path / "synth"), "--no-content"]) == 0
    assert main(["data", "prepare", "--movielens", str(tmp_path / "synth"), "--out", str(tmp_path / "ws")]) == 0
    movies = pq.read_table(tmp_path / "ws" / "movies.parquet")
    assert movies.num_rows == 80
    assert main(["data", "split", "--workspace", str(tmp_path / "ws")]) == 0


def test_errors_name_the_problem_and_exit_2(tmp_path, capsys):
    assert main(["data", "prepare", "--movielens", str(tmp_path / "nothing-here"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "nothing-here" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()

    bad = tmp_path / "bad"
    bad.mkdir()
    src = embedded_ml100k_dir()
    (bad / "ml-100k.item").write_bytes((src / "ml-100k.item").read_bytes())
    lines = (src / "ml-100k.inter").read_text().splitlines()
    lines[5] = "abc\t242\t3\t881250949"
    (bad / "ml-100k.inter").write_text("\n".join(lines) + "\n")
    assert main(["data", "prepare", "--movielens", str(bad), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "ml-100k.inter:6" in err
    assert not (tmp_path / "o" / "interactions.parquet").exists()

    assert main(["data", "split", "--workspace", str(tmp_path / "empty")]) == 2
    assert "armor data prepare" in capsys.readouterr().err

    with pytest.raises(SystemExit) as exc:
        main(["data", "split", "--workspace", str(tmp_path), "--method", "nonsense"])
    assert exc.value.code == 2
    assert "--method" in capsys.readouterr().err


def test_demo_without_content_trains_and_reports_both_protocols(tmp_path, capsys):
    # No scrape and no encode: the models that need no content run on every movie, under both
    # protocols, and the report gives Table 1 for each (the content stages have their own tests).
    assert main(["demo", "--workspace", str(tmp_path / "demo"), "--bootstrap", "50", "--skip-scrape",
                 "--models", "popularity", "random", "--no-tracking"]) == 0
    out = capsys.readouterr().out
    assert "Table 1 under leave-one-out" in out and "Table 1 under random 80/10/10" in out
    assert "best by validation under loo: popularity" in out and "best by validation under random: popularity" in out
    rows = list(csv.DictReader((tmp_path / "demo" / "report" / "table1.csv").open()))
    assert sorted((r["model"], r["protocol"]) for r in rows) == [
        ("Popularity", "loo"), ("Popularity", "random"), ("Random", "loo"), ("Random", "random")]
    for protocol in ("random", "loo"):  # popularity beats random by a wide margin on real data
        pop = next(r for r in rows if r["model"] == "Popularity" and r["protocol"] == protocol)
        rnd = next(r for r in rows if r["model"] == "Random" and r["protocol"] == protocol)
        assert float(pop["recall@10"]) > 3 * float(rnd["recall@10"])
    assert not (tmp_path / "demo" / "features").exists()  # nothing needed the feature store


def test_interaction_baselines_train_without_a_feature_store(tmp_path, capsys):
    ws = tmp_path / "ws"
    assert main(["data", "synth", "--size", "tiny", "--out", str(tmp_path / "synth"), "--no-content"]) == 0
    assert main(["data", "prepare", "--movielens", str(tmp_path / "synth"), "--out", str(ws)]) == 0
    assert main(["data", "split", "--workspace", str(ws), "--method", "loo"]) == 0
    assert "| users with >= 5 positives in the catalogue |" in capsys.readouterr().out  # the funnel
    for model in ("bpr", "popularity", "ease", "itemknn"):
        assert main(["train", "--workspace", str(ws), "--split", "loo", "--model", model, "--local",
                     "--bpr-iterations", "20", "--no-tracking"]) == 0, capsys.readouterr().err
        assert (ws / "models" / "loo" / model / "metrics.json").exists()
    assert not (ws / "features").exists()
    # a content model on the same workspace says what it is missing
    assert main(["train", "--workspace", str(ws), "--split", "loo", "--model", "text", "--local",
                 "--no-tracking"]) == 2
    assert "feature store" in capsys.readouterr().err
    # and the multimodal catalogue cannot be chosen without one
    assert main(["data", "split", "--workspace", str(ws), "--catalogue", "multimodal"]) == 2
    assert "armor encode" in capsys.readouterr().err
