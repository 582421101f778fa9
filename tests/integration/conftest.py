import os

import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


@pytest.fixture(scope="module")
def ray_local():
    """A local Ray runtime for one test module, always shut down."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
    # address="local": never attach to a cluster some earlier `ray start` (or a killed
    # cluster_utils run) left recorded in /tmp/ray/ray_current_cluster.
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()


from tests.mlflow_server import mlflow_server  # noqa: E402, F401 - a real `mlflow server` per module
