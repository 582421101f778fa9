"""Starting and stopping Ray the same way in every stage."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

log = logging.getLogger("armor.ray")


@contextlib.contextmanager
def ray_session(num_cpus: int | None = None) -> Iterator[None]:
    """Use the Ray runtime this process is already attached to (``ray job submit``, a notebook),
    else the cluster in ``RAY_ADDRESS``, else start a local one; stop only what we started."""
    import ray

    if ray.is_initialized():
        yield
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if os.environ.get("RAY_ADDRESS"):
        ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=True)
    else:
        # The dashboard stays on: Train V2 queries actor state through it (see STACK_NOTES).
        # address="local": a stale /tmp/ray/ray_current_cluster must not hijack a local run;
        # a running cluster is joined through RAY_ADDRESS or `ray job submit`.
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=True, log_to_driver=True)
    log.info("ray: %s", ray.cluster_resources())
    try:
        yield
    finally:
        ray.shutdown()


def quiet_ray_data() -> None:
    """Our own progress bars and summaries replace Ray Data's per-operator bars."""
    from ray.data import DataContext

    context = DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
