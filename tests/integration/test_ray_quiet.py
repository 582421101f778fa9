"""Ray's own chatter stays out of a stage's output unless -v; our workers' lines still get through.

These check the knobs themselves, without starting Ray; `tests/e2e/test_cli_progress.py` checks a
whole stage's output.
"""

import logging
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from pipelines import ray_utils
from pipelines.cli import setup_logging

pytestmark = pytest.mark.ray
ROOT = Path(__file__).resolve().parents[2]

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


def test_building_the_data_context_does_not_warn_when_quiet():
    """Ray sets its own deprecated DataContext fields' defaults when it builds the context, and warns
    about them: quiet, the build is silent. In a fresh process, where the context is first built."""
    code = ("import warnings\n"
            "from ray.data import DataContext\n"
            "from pipelines import ray_utils\n"
            "with warnings.catch_warnings(record=True) as caught:\n"
            "    warnings.simplefilter('always')\n"
            "    DataContext()\n"
            "    print('unfiltered', sum(issubclass(w.category, DeprecationWarning) for w in caught))\n"
            "    caught.clear()\n"
            "    ray_utils.show_ray_logs(False)\n"
            "    ray_utils.quiet_ray_data()\n"
            "    print('quiet', sum(issubclass(w.category, DeprecationWarning) for w in caught))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-3000:]
    counts = dict(line.split() for line in done.stdout.splitlines())
    assert int(counts["unfiltered"]) > 0 and counts["quiet"] == "0", done.stdout


def test_our_own_deprecated_ray_calls_still_warn_when_quiet(monkeypatch):
    from ray.data import DataContext
    from ray.util.annotations import RayDeprecationWarning

    monkeypatch.setattr(ray_utils, "_state", {"show": False})
    context = DataContext.get_current()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ray_utils.quiet_ray_data()
        caught.clear()
        # What Ray raises, at our line, for a deprecated call of ours (``stacklevel`` points here) ...
        warnings.warn("`ray_remote_args_fn` is deprecated and will be removed in Ray 2.64.", RayDeprecationWarning,
                      stacklevel=1)
        # ... and when our code sets a deprecated DataContext field (Ray's __setattr__ warns from ray.data).
        context.use_polars = context.use_polars
        # Ray's own use of its deprecated API, attributed to a line inside Ray, stays hidden.
        warnings.warn_explicit("Ray calling itself", RayDeprecationWarning, "ray/data/_internal/x.py", 1,
                               module="ray.data._internal.x")
    messages = [str(w.message) for w in caught]
    assert any("ray_remote_args_fn" in m for m in messages), messages
    assert any("use_polars" in m for m in messages), messages
    assert not any("Ray calling itself" in m for m in messages), messages


def test_the_private_ray_printer_we_wrap_is_still_what_ray_calls():
    """``_drop_forwarded_noise`` replaces ``ray._private.worker.print_to_stdstream``: it works only
    while Ray's log and error listeners look that name up when they run, with (data, ignore_prefix)."""
    import inspect

    from ray._private import worker

    printer = getattr(worker.print_to_stdstream, "__wrapped__", worker.print_to_stdstream)
    assert list(inspect.signature(printer).parameters)[:2] == ["data", "ignore_prefix"]
    for caller in (worker.connect, worker.listen_error_messages):  # looked up by name when they run
        assert "print_to_stdstream" in inspect.unwrap(caller).__code__.co_names, caller.__name__


ACTOR_POOL_JOB = r"""
import sys
from pipelines.ray_utils import quiet_ray_data, ray_session, show_ray_logs
show_ray_logs(sys.argv[1] == "shown")
with ray_session(num_cpus=2):
    import ray
    quiet_ray_data()

    class Double:
        def __call__(self, batch):
            return {"id": batch["id"] * 2}

    print(sum(r["id"] for r in ray.data.range(8).map_batches(Double, concurrency=1, batch_size=4).take_all()))
"""


@pytest.mark.ray
def test_the_drivers_own_cpp_notice_is_gone_when_quiet_and_shown_with_ray_logs():
    runs = {mode: subprocess.run([sys.executable, "-c", ACTOR_POOL_JOB, mode], capture_output=True, text=True,
                                 timeout=300, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
            for mode in ("quiet", "shown")}
    for mode, done in runs.items():
        assert done.returncode == 0 and done.stdout.strip().endswith("56"), (mode, done.stderr[-3000:])
    notice = "has constructor arguments in the object store"
    assert notice in runs["shown"].stderr  # Ray prints it: the quiet run's silence is the filter's doing
    assert notice not in runs["quiet"].stderr
    assert not re.search(r"^\[[^\]]* E \d+ \d+\]", runs["quiet"].stderr, re.MULTILINE), runs["quiet"].stderr
