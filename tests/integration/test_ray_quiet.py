"""Ray's own chatter stays out of a stage's output unless -v; our workers' lines still get through.

These check the knobs themselves, without starting Ray; `tests/e2e/test_cli_progress.py` checks a
whole stage's output.
"""

import logging
import warnings

import pytest

from pipelines import ray_utils
from pipelines.cli import setup_logging

pytestmark = pytest.mark.ray

NOISE = [
    "WARNING: 8 PYTHON worker processes have been started on node: abc with address: 10.0.0.1. This could be ...",
    "[2026-11-30 13:40:20,474 E 24297 24359] core_worker.cc:2465: Actor with class name: 'PreemptionWatcher' and "
    "ID: 'a013' has constructor arguments in the object store and max_restarts > 0. If the arguments ...",
    "Reporting training result 3: TrainingReport(checkpoint=Checkpoint(filesystem=local, path=/x), metrics={})",
]
OURS = ["fused: 12/50 epochs (24.0%), 10.0 s/epoch, ETA 6m20s; loss 0.17", "benchmark random: 240 of 240 movies"]


@pytest.fixture
def printer(monkeypatch):
    from ray._private import worker

    printed = []
    monkeypatch.setattr(worker, "print_to_stdstream", lambda data, ignore_prefix: printed.append(data["lines"]))
    yield worker, printed


def test_forwarded_ray_noise_is_dropped_and_our_worker_lines_are_kept(printer):
    worker, printed = printer
    ray_utils._drop_forwarded_noise()
    ray_utils._drop_forwarded_noise()  # idempotent: wrapped once
    worker.print_to_stdstream({"lines": NOISE[:2] + OURS, "pid": 7, "is_err": True}, ignore_prefix=False)
    worker.print_to_stdstream({"lines": NOISE[2:], "pid": "raylet", "is_err": False}, ignore_prefix=False)
    assert printed == [OURS]  # an all-noise batch prints nothing


def test_verbosity_decides_what_of_ray_is_shown(monkeypatch):
    monkeypatch.setattr(ray_utils, "_state", {"show": True})
    setup_logging(0)
    assert not ray_utils.ray_logs_shown() and ray_utils.train_logging_config().log_level == "WARNING"
    setup_logging(1)  # -v
    assert ray_utils.ray_logs_shown() and ray_utils.train_logging_config().log_level == "INFO"
    setup_logging(-1)  # -q
    assert not ray_utils.ray_logs_shown()


def test_ray_data_console_keeps_warnings_but_not_its_info_or_the_notice_we_cause(monkeypatch):
    monkeypatch.setattr(ray_utils, "_state", {"show": False})
    with warnings.catch_warnings():  # the warning filters it adds end with the test
        ray_utils.quiet_ray_data()
        ray_utils.quiet_ray_data()
    console = [h for h in logging.getLogger("ray.data").handlers if type(h).__name__ == "PlainRayHandler"]
    assert console and all(sum(isinstance(f, ray_utils._RayDataConsoleFilter) for f in h.filters) == 1
                           for h in console)

    def shown(level: int, message: str) -> bool:
        record = logging.LogRecord("ray.data", level, __file__, 1, message, None, None)
        return all(h.filter(record) for h in console)

    assert not shown(logging.INFO, "Dataset dataset_1 execution finished in 21.51 seconds")
    assert not shown(logging.WARNING, "Progress bars disabled. To enable, set ...")
    assert shown(logging.WARNING, "Ray Data is running out of object store memory")


def test_ray_deprecation_warnings_are_ignored_when_quiet(monkeypatch):
    from ray.data import DataContext

    monkeypatch.setattr(ray_utils, "_state", {"show": False})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        DataContext()
        assert any(issubclass(w.category, DeprecationWarning) for w in caught)  # Ray warns about its own fields
        caught.clear()
        ray_utils.quiet_ray_data()
        DataContext()
        assert caught == []
