"""A simulated multi-node cluster on this machine: encode and a 2-worker train run across nodes,
and neither loses its run when a node is removed midway."""

import json
import threading
import time
from pathlib import Path

import pyarrow as pa
import pytest

from armor.config import EncodeConfig, FusionConfig, TrainConfig
from armor.data.synthetic import SyntheticConfig, SyntheticWorld
from armor.features.store import FeatureStore
from armor.tmdb.scrape import SCRAPE_SCHEMA, ScrapeStore
from tests.processes import descendants
from tests.workspaces import make_workspace

pytestmark = [pytest.mark.ray, pytest.mark.slow]


@pytest.fixture
def cluster():
    import ray
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    workers = [cluster.add_node(num_cpus=1) for _ in range(3)]
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    try:
        yield cluster, workers
    finally:
        ray.shutdown()
        cluster.shutdown()


def remove_when(cluster, node, condition, timeout=120):
    """Remove a node from a background thread as soon as ``condition()`` holds.

    ``node`` is a node, or a callable returning the node to remove (None: not yet known).
    """
    removed = threading.Event()

    def watch():
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            target = node() if callable(node) else node
            if target is not None and condition():
                cluster.remove_node(target, allow_graceful=False)
                removed.set()
                return
            time.sleep(0.1)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread, removed


def test_training_across_nodes_survives_losing_a_node(cluster, tmp_path):
    import ray

    from armor.models.registry import ModelSettings
    from pipelines.tracking import Tracking
    from pipelines.train import Placement, TrainJob, train

    cluster, workers = cluster
    ws = make_workspace(tmp_path / "ws")
    job = TrainJob(workspace=str(ws), split="random", model="fused",
                   settings=ModelSettings.of(fusion=FusionConfig(dim=32, out_dim=16, heads=2),
                                             train=TrainConfig(batch_size=64, epochs=8, steps_per_epoch=80,
                                                               patience=20)))
    checkpoints = ws / "ray_results"

    def two_epochs_registered():
        # A checkpoint directory on disk is not yet a checkpoint Ray Train resumes from: the
        # controller registers it (in its snapshot) only once every rank has reported the epoch.
        for snapshot in checkpoints.glob("*/checkpoint_manager_snapshot.json"):
            try:
                latest = json.loads(snapshot.read_text()).get("latest_checkpoint_result") or {}
            except (OSError, ValueError):
                continue
            if latest.get("metrics", {}).get("epoch", 0) >= 2:
                return True
        return False

    def hosts_a_training_worker(node) -> bool:
        for pid in descendants(node.all_processes["raylet"][0].process.pid):
            try:
                if b"RayTrainWorker" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    return True
            except OSError:  # the process ended meanwhile
                continue
        return False

    def node_with_a_training_worker():
        return next((node for node in workers if hosts_a_training_worker(node)), None)

    # Remove a node that hosts a training worker once two epochs are checkpointed.
    thread, removed = remove_when(cluster, node_with_a_training_worker, two_epochs_registered)
    summary = train(job, Placement(workers=2, max_failures=3), Tracking(tracking=False))
    thread.join()
    assert removed.is_set(), "the node was never removed: the run finished too fast to test recovery"
    assert [h["epoch"] for h in summary["history"]] == list(range(1, 9))
    assert summary["last_report"]["resumed_runs"] == 1
    alive = [n for n in ray.nodes() if n["Alive"]]
    assert len(alive) == 3  # head + the two remaining workers


def test_encode_across_nodes_survives_losing_a_node(cluster, tmp_path):
    from pipelines.encode import encode

    cluster, workers = cluster
    world = SyntheticWorld(SyntheticConfig.preset("tiny"))
    store = ScrapeStore(tmp_path / "tmdb")
    content = world.content(list(range(1, 41))).to_pylist()
    rows = [{"movie_id": c["movie_id"], "status": "ok", "overview": c["overview"], "poster": c["poster"],
             "thumbnail": c["thumbnail"], "scraped_at": 1000, "genres": []} for c in content]
    for start in range(0, 40, 8):
        store.write_part(pa.Table.from_pylist(rows[start:start + 8], schema=SCRAPE_SCHEMA))
    features = tmp_path / "features"

    def first_part_written():
        return features.exists() and len(list(features.glob("part-*.parquet"))) >= 1

    thread, removed = remove_when(cluster, workers[1], first_part_written)
    config = EncodeConfig(batch_size=4, image_weights="none", actors=2)
    summary = encode(tmp_path, config)
    thread.join()
    assert removed.is_set()
    table = FeatureStore.open(features).read(["movie_id", "poster_status"])
    assert sorted(table["movie_id"].to_pylist()) == list(range(1, 41))  # each movie exactly once
    assert set(table["poster_status"].to_pylist()) == {"ok"}
    assert summary["movies"] == 40
