"""A workspace can be copied or moved: training, registering and resuming a sweep in the copy write
into the copy, and nothing in the original changes."""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
from pathlib import Path

import pytest

from armor.config import FusionConfig, TrainConfig
from armor.models.registry import ModelSettings
from pipelines.register import recommend, register
from pipelines.tracking import Tracking
from pipelines.train import Placement, TrainJob, train
from tests.workspaces import make_workspace

pytestmark = pytest.mark.slow

SETTINGS = ModelSettings.of(fusion=FusionConfig(dim=16, out_dim=8, heads=2),
                            train=TrainConfig(batch_size=64, epochs=2, steps_per_epoch=3))


def fingerprint(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def stored_paths_naming(db: Path, root: Path) -> int:
    """Text fields of the store that name ``root``."""
    count = 0
    with sqlite3.connect(db) as connection:
        for (table,) in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall():
            for column in [row[1] for row in connection.execute(f'PRAGMA table_info("{table}")')]:
                count += connection.execute(f'SELECT count(*) FROM "{table}" WHERE instr(CAST("{column}" AS TEXT), ?)',
                                            (str(root) + "/",)).fetchone()[0]
    return count


def test_train_and_register_in_a_copied_workspace_leave_the_original_untouched(tmp_path):
    original = make_workspace(tmp_path / "original")
    train(TrainJob(workspace=str(original), model="text", settings=SETTINGS), Placement(local=True), Tracking())
    register(original, "random/text")
    assert stored_paths_naming(original / "mlflow.db", original.resolve()) > 0  # absolute paths, as MLflow keeps
    before = fingerprint(original)

    copy = tmp_path / "copy"
    shutil.copytree(original, copy)
    train(TrainJob(workspace=str(copy), model="text-projected", settings=SETTINGS), Placement(local=True), Tracking())
    version, _, uri = register(copy, "random/text-projected")
    answer = recommend("models:/armor-item-embeddings@champion", [1, 2, 3], 5, tracking_uri=uri)

    assert fingerprint(original) == before  # nothing written, nothing changed
    assert stored_paths_naming(copy / "mlflow.db", original.resolve()) == 0
    assert list((copy / "mlartifacts").iterdir())  # the copy's runs have their artifacts in the copy
    assert len(answer) == 5 and version == "2"


@pytest.mark.ray
def test_a_sweep_resumed_in_a_copied_workspace_runs_there(tmp_path):
    from pipelines.tune import main as tune_main

    original = make_workspace(tmp_path / "original")
    sweep = ["--samples", "1", "--epochs", "1", "--steps-per-epoch", "2", "--batch-size", "64", "--out-dims", "8",
             "--dim", "16", "--grace-period", "1", "--max-concurrent", "1"]
    assert tune_main(["--workspace", str(original), *sweep, "--no-retrain"]) == 0
    before = fingerprint(original)
    copy = tmp_path / "copy"
    shutil.copytree(original, copy)
    assert tune_main(["--workspace", str(copy), *sweep, "--resume"]) == 0  # then retrains the winner, in the copy
    assert fingerprint(original) == before
    assert (copy / "models" / "random" / "fused-sweep-best" / "metrics.json").exists()
    assert stored_paths_naming(copy / "mlflow.db", original.resolve()) == 0
