"""Ray Train: data-parallel training, checkpoints every epoch, recovery from a killed worker."""

import json

import numpy as np
import pytest

from armor.config import FusionConfig, LightGCNConfig, TrainConfig
from armor.models.base import load_recommender
from armor.models.registry import ModelSettings
from pipelines.tracking import Tracking
from pipelines.train import Placement, TrainJob, train
from tests.workspaces import make_workspace

pytestmark = [pytest.mark.ray, pytest.mark.slow]

FUSION = FusionConfig(dim=32, out_dim=16, heads=2)
TRAIN = TrainConfig(batch_size=64, epochs=4, steps_per_epoch=6, patience=10)


def test_a_killed_worker_resumes_from_the_last_checkpoint_and_finishes(ray_local, tmp_path):
    ws = make_workspace(tmp_path / "ws")
    marker = tmp_path / "killed"
    job = TrainJob(workspace=str(ws), split="random", model="fused",
                   settings=ModelSettings.of(fusion=FUSION, train=TRAIN),
                   kill_rank_after_epoch=(1, 2), kill_marker=str(marker))
    summary = train(job, Placement(workers=2, max_failures=2))
    assert marker.read_text().startswith("killed rank 1 after epoch 2")
    assert [h["epoch"] for h in summary["history"]] == [1, 2, 3, 4]  # nothing repeated, nothing lost
    assert summary["last_report"]["resumed_runs"] == 1  # the final epochs ran in the restarted group
    assert summary["last_report"]["resumed_from_epoch"] == 2
    assert summary["last_report"]["epoch"] == 4
    metrics = json.loads((ws / "models" / "random" / "fused" / "metrics.json").read_text())
    assert metrics["valid"]["ndcg@10"] == summary["valid"]["ndcg@10"] > 0
    assert (ws / "models" / "random" / "fused" / "item_embeddings.parquet").exists()


def test_lightgcn_checkpoints_every_epoch_and_resumes_to_the_uninterrupted_result(ray_local, tmp_path):
    ws = make_workspace(tmp_path / "ws")
    marker = tmp_path / "killed"
    config = LightGCNConfig(dim=16, layers=2, lr=1e-2, batch_size=1024, epochs=5, patience=10)
    settings = ModelSettings.of(lightgcn=config)
    job = TrainJob(workspace=str(ws), split="random", model="lightgcn", settings=settings,
                   kill_rank_after_epoch=(0, 2), kill_marker=str(marker))
    summary = train(job, Placement(max_failures=2), Tracking(tracking=False))
    assert marker.read_text().startswith("killed rank 0 after epoch 2")
    assert [h["epoch"] for h in summary["history"]] == [1, 2, 3, 4, 5]
    assert summary["last_report"]["resumed_from_epoch"] == 2  # not retrained from scratch
    # Training is seeded and the checkpoint holds its whole state (optimizer, sampler RNG, best
    # epoch so far), so the resumed run ends where an uninterrupted one does.
    uninterrupted = train(TrainJob(workspace=str(ws), split="random", model="lightgcn", settings=settings,
                                   name="lightgcn-local"), Placement(local=True), Tracking(tracking=False))
    assert [h["epoch"] for h in uninterrupted["history"]] == [1, 2, 3, 4, 5]
    for resumed, whole in zip(summary["history"], uninterrupted["history"]):
        assert resumed["val_ndcg@10"] == pytest.approx(whole["val_ndcg@10"], abs=1e-6)
    on_ray = load_recommender(ws / "models" / "random" / "lightgcn" / "model").item_final
    local = load_recommender(ws / "models" / "random" / "lightgcn-local" / "model").item_final
    np.testing.assert_allclose(on_ray, local, rtol=1e-4, atol=1e-6)


def test_two_workers_train_what_one_process_would(ray_local, tmp_path):
    # PairSampler gives rank r slice r of each global batch and the loss is computed on the
    # gathered batch, so 2 workers x 32 pairs follow the same path as 1 process x 64 pairs.
    ws = make_workspace(tmp_path / "ws")
    no_dropout = FusionConfig(dim=32, out_dim=16, heads=2, dropout=0.0)  # dropout masks differ per rank
    half = TrainConfig(batch_size=32, epochs=2, steps_per_epoch=6, patience=10, mining="semi-hard")
    whole = TrainConfig(batch_size=64, epochs=2, steps_per_epoch=6, patience=10, mining="semi-hard")
    distributed = train(TrainJob(workspace=str(ws), split="random", model="fused", name="two",
                                 settings=ModelSettings.of(fusion=no_dropout, train=half)), Placement(workers=2))
    single = train(TrainJob(workspace=str(ws), split="random", model="fused", name="one",
                            settings=ModelSettings.of(fusion=no_dropout, train=whole)), Placement(local=True))
    assert distributed["history"][0]["loss"] == pytest.approx(single["history"][0]["loss"], rel=1e-4)
    assert distributed["valid"]["ndcg@10"] == pytest.approx(single["valid"]["ndcg@10"], abs=2e-3)
