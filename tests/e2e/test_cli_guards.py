"""Wrong comparisons the tool refuses, and a surface that says what it does: a model scored on
another split than its own, flags the model ignores, a tuned model replaced, a missing workspace,
`armor evaluate`'s outputs."""

from __future__ import annotations

import json

import pytest

from pipelines.__main__ import main


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    root = tmp_path_factory.mktemp("guards")
    ws = root / "ws"
    assert main(["data", "synth", "--size", "tiny", "--out", str(root / "synth"), "--no-content"]) == 0
    assert main(["data", "prepare", "--movielens", str(root / "synth"), "--out", str(ws)]) == 0
    for method in ("random", "loo"):
        assert main(["data", "split", "--workspace", str(ws), "--method", method]) == 0
    for split in ("random", "loo"):
        assert main(["train", "--workspace", str(ws), "--split", split, "--model", "ease", "--local",
                     "--no-tracking"]) == 0
    return ws


def test_a_model_of_another_split_is_refused_unless_asked_for(ws, capsys):
    trained_on_random = str(ws / "models" / "random" / "ease")
    assert main(["evaluate", "--workspace", str(ws), "--split", "loo", "--model", trained_on_random]) == 2
    err = capsys.readouterr().err
    assert "trained on split 'random', not on 'loo'" in err and "--allow-other-split" in err
    assert main(["evaluate", "--workspace", str(ws), "--split", "loo", "--model", trained_on_random,
                 "--allow-other-split", "--bootstrap", "0"]) == 0
    assert "(trained on split 'random')" in capsys.readouterr().out


def test_a_model_saved_before_split_digests_is_still_refused_on_another_split(ws, tmp_path, capsys):
    import shutil

    legacy = tmp_path / "ease"
    shutil.copytree(ws / "models" / "random" / "ease", legacy)
    meta = json.loads((legacy / "metrics.json").read_text())
    del meta["split_digest"]  # as metrics.json was written before the digest
    (legacy / "metrics.json").write_text(json.dumps(meta))
    assert main(["evaluate", "--workspace", str(ws), "--split", "loo", "--model", str(legacy)]) == 2
    assert "trained on split 'random', not on 'loo'" in capsys.readouterr().err
    assert main(["evaluate", "--workspace", str(ws), "--split", "random", "--model", str(legacy),
                 "--bootstrap", "0"]) == 0


def test_evaluate_takes_the_directory_train_prints_and_never_overwrites(ws, capsys):
    own = ws / "models" / "loo" / "ease"
    tables = []
    for model in (own, own / "model"):  # the directory `armor train` prints, and its model/ folder
        before = set((ws / "report").glob("evaluate-loo-valid*.md"))
        assert main(["evaluate", "--workspace", str(ws), "--split", "loo", "--model", str(model),
                     "--bootstrap", "0"]) == 0
        (added,) = set((ws / "report").glob("evaluate-loo-valid*.md")) - before  # a new file, nothing replaced
        tables.append(added.read_text())
    assert "nan" not in capsys.readouterr().out  # no bootstrap: no interval, not "[nan, nan]"
    assert tables[0] == tables[1] and "| ease |" in tables[0]


def test_flags_the_model_does_not_read_are_named_and_not_validated(ws, caplog):
    assert main(["train", "--workspace", str(ws), "--split", "random", "--model", "ease", "--local", "--no-tracking",
                 "--name", "ease-flags", "--epochs", "2", "--margin", "0.9", "--bpr-factors", "8"]) == 0
    assert "ease does not read --bpr-factors, --epochs, --margin: ignored" in caplog.text
    # BPR does not read the content models' --epochs: an invalid value there is not BPR's error.
    assert main(["train", "--workspace", str(ws), "--split", "random", "--model", "bpr", "--local", "--no-tracking",
                 "--name", "bpr-flags", "--epochs", "-1", "--bpr-iterations", "20"]) == 0


def test_training_over_a_tuned_model_says_what_it_replaces(ws, caplog):
    args = ["train", "--workspace", str(ws), "--split", "random", "--model", "ease", "--local", "--no-tracking",
            "--name", "ease-tuned"]
    assert main([*args, "--trials", "2"]) == 0
    tuned = json.loads((ws / "models" / "random" / "ease-tuned" / "metrics.json").read_text())
    caplog.clear()
    assert main(args) == 0
    assert "replacing models/random/ease-tuned (searched with 2 trials" in caplog.text
    assert str(tuned["valid"]["ndcg@10"]) in caplog.text


def test_recommend_on_a_missing_workspace_is_an_error_that_creates_nothing(tmp_path, capsys):
    missing = tmp_path / "nowhere"
    assert main(["recommend", "--workspace", str(missing), "--history", "1,2,3"]) == 2
    assert "no such workspace" in capsys.readouterr().err
    assert not missing.exists()
