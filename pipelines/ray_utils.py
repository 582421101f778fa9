"""Starting and stopping Ray the same way in every stage, and keeping Ray's own chatter out of the
user's way.

The CLI calls ``show_ray_logs(False)`` unless -v: then a stage's output is its own progress and
results, and our workers' log lines, not Ray's start-up messages. What that changes, and how:

- the driver's ``ray`` logger is at ERROR while ``ray.init`` runs (the token-auth notice, "Started
  a local Ray instance"), WARNING after it;
- Ray Data's console handler shows warnings only, less the "Progress bars disabled" notice that
  ``quiet_ray_data`` causes on purpose (Ray Data's INFO stays in its session log file);
- Ray Train's controller and workers log ``ray.train`` at WARNING (``train_logging_config``):
  no "Requesting resources", "Checkpoint successfully created" or "Reporting training result" per
  epoch; the root logger of its workers stays at INFO, so the Trainer's lines still reach us;
- lines Ray forwards from its processes to the driver are dropped when they match ``RAY_NOISE``:
  the raylet's "N PYTHON worker processes have been started" warning, the core worker's
  "constructor arguments in the object store and max_restarts > 0" notice (both harmless here),
  and Ray Train's per-epoch "Reporting training result" line (its logger is named after its file,
  outside ``ray.train``, so the LoggingConfig above misses it);
- Ray's deprecation warnings about Ray's own calls are ignored: ``RayDeprecationWarning``s
  attributed to a line inside ``ray.*``, and the ``DeprecationWarning``s ``DataContext`` raises
  about its own fields' defaults while Ray builds it. A deprecated Ray call of ours still warns
  (Ray attributes those to the caller's line, and a deprecated ``DataContext`` field we set warns
  outside that one build).

- the same notice printed by the driver's own C++ core worker when a Ray Data actor pool starts
  (an error-level line, harmless here: the pool's arguments stay referenced for the job's life)
  is written straight to file descriptor 2, past Python: while a quiet session runs, fd 2 goes
  through a pipe whose reader drops the lines ``RAY_NOISE`` matches and passes everything else on
  at once (a line that starts like Ray's C++ log, ``[``, is held until it ends). Ray's own knobs
  cost more: ``RAY_BACKEND_LOG_LEVEL=fatal`` makes every Ray process print "Set ray log level from
  environment variable" instead and drops C++ errors from the session logs; ``max_restarts=0``
  gives up restarting scrape and encode actors on a lost node.

A library caller that never calls ``show_ray_logs`` sees Ray exactly as Ray prints itself.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import threading
import warnings
from collections.abc import Iterator
from typing import Any

log = logging.getLogger("armor.ray")

RAY_NOISE = re.compile(r"worker processes have been started on node"
                       r"|has constructor arguments in the object store and max_restarts > 0"
                       r"|Reporting training result \d+: TrainingReport\(")

_state = {"show": True}


def show_ray_logs(show: bool) -> None:
    """Whether Ray's own start-up messages and INFO lines reach the console (the CLI: only with -v)."""
    _state["show"] = bool(show)


def ray_logs_shown() -> bool:
    return _state["show"]


@contextlib.contextmanager
def ray_session(num_cpus: int | None = None) -> Iterator[None]:
    """Use the Ray runtime this process is already attached to (``ray job submit``, a notebook),
    else the cluster in ``RAY_ADDRESS``, else start a local one; stop only what we started."""
    import ray

    if ray.is_initialized():
        yield
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if not sys.stderr.isatty():  # no colour codes around worker prefixes in a log file (`ray job logs`)
        os.environ.setdefault("RAY_COLOR_PREFIX", "0")
    quiet = not ray_logs_shown()
    if quiet:
        _drop_forwarded_noise()
    options: dict[str, Any] = {"log_to_driver": True, "logging_level": logging.ERROR if quiet else logging.INFO}
    if os.environ.get("RAY_ADDRESS"):
        ray.init(address=os.environ["RAY_ADDRESS"], **options)
    else:
        # The dashboard stays on: Train V2 queries actor state through it (see STACK_NOTES).
        # address="local": a stale /tmp/ray/ray_current_cluster must not hijack a local run;
        # a running cluster is joined through RAY_ADDRESS or `ray job submit`.
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=True, **options)
    if quiet:
        logging.getLogger("ray").setLevel(logging.WARNING)  # start-up is over; later warnings matter
        _ignore_ray_deprecations()
    log.info("ray: %s", ray.cluster_resources())
    try:
        # After ray.init: the processes it started keep the real fd 2, only this driver's goes through the filter.
        with filtered_native_stderr() if quiet else contextlib.nullcontext():
            yield
    finally:
        ray.shutdown()


@contextlib.contextmanager
def filtered_native_stderr(noise: re.Pattern[str] = RAY_NOISE) -> Iterator[None]:
    """Within the block, this process's file descriptor 2 (what C++ code writes to) passes through a
    pipe that drops whole lines matching ``noise``; anything else is passed on as it arrives."""
    try:
        sys.stderr.flush()
        original = os.dup(2)
        read_end, write_end = os.pipe()
    except (OSError, ValueError):  # no usable fd 2: nothing to filter
        yield
        return
    os.dup2(write_end, 2)
    os.close(write_end)
    pump = threading.Thread(target=_pump, args=(read_end, original, noise), name="armor-stderr-filter", daemon=True)
    pump.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(original, 2)  # the pipe's last writer closes: the pump reads EOF, flushes and ends
        pump.join(timeout=5)
        if not pump.is_alive():
            os.close(original)


def _pump(read_end: int, out: int, noise: re.Pattern[str]) -> None:
    held = b""  # a line that starts like Ray's C++ log ("[2026-...") waits for its end
    with open(read_end, "rb", buffering=0) as pipe:
        while chunk := pipe.read(65536):
            data, held = held + chunk, b""
            lines = data.split(b"\n")
            last = lines.pop()
            for line in lines:
                if not noise.search(line.decode(errors="replace")):
                    os.write(out, line + b"\n")
            if last.startswith(b"["):
                held = last
            elif last:
                os.write(out, last)
    if held and not noise.search(held.decode(errors="replace")):
        os.write(out, held)


def _drop_forwarded_noise() -> None:
    """Filter the lines Ray prints on the driver for its other processes (workers, raylet) through
    ``RAY_NOISE``. Ray has no public hook for this: wrap the function its log and error listeners
    call, before ``ray.init`` binds it. This is the project's one use of Ray's private worker
    module; tests/integration/test_ray_quiet.py fails if the pinned Ray moves or renames it."""
    try:
        from ray._private import worker
    except ImportError:  # pragma: no cover - another Ray layout
        return
    printer = getattr(worker, "print_to_stdstream", None)
    if printer is None or getattr(printer, "armor_filtered", False):
        return

    def print_filtered(data: dict[str, Any], *args: Any, **kwargs: Any) -> None:
        lines = [line for line in data.get("lines", []) if not RAY_NOISE.search(line)]
        if lines:
            printer({**data, "lines": lines}, *args, **kwargs)

    print_filtered.armor_filtered = True  # type: ignore[attr-defined]
    print_filtered.__wrapped__ = printer  # type: ignore[attr-defined]
    worker.print_to_stdstream = print_filtered


def _ignore_ray_deprecations() -> None:
    """Ray's ``RayDeprecationWarning``s about its own calls (attributed to a line inside Ray) are
    Ray's to fix. Only those: Ray attributes a warning about a deprecated call to the caller's line,
    so a deprecated call of ours still warns, and plain ``DeprecationWarning``s are left alone."""
    from ray.util.annotations import RayDeprecationWarning

    warnings.filterwarnings("ignore", category=RayDeprecationWarning, module=r"ray\.")


def _current_data_context() -> Any:
    """Ray Data's current ``DataContext``; quiet, building it does not warn about the deprecated
    fields whose defaults Ray sets itself (``use_polars``, ``use_push_based_shuffle``, ...)."""
    from ray.data import DataContext

    if ray_logs_shown():
        return DataContext.get_current()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"ray\.data\.context")
        return DataContext.get_current()


class _RayDataConsoleFilter(logging.Filter):
    """Ray Data's console handler, quiet: warnings only, and not the notice our own choice causes."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING and not record.getMessage().startswith("Progress bars disabled")


def quiet_ray_data() -> None:
    """Our own progress (``armor.progress``) replaces Ray Data's per-operator bars and log lines:
    one progress per stage, in the stage's unit (movies), with its statuses."""
    if not ray_logs_shown():
        _ignore_ray_deprecations()
    context = _current_data_context()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    if ray_logs_shown():
        return
    # Only Ray's own console handler: the "ray.data" logger can also hold the application's (root)
    # handlers, and filtering those would silence our INFO lines too.
    for handler in logging.getLogger("ray.data").handlers:
        if type(handler).__name__ == "PlainRayHandler" and \
                not any(isinstance(f, _RayDataConsoleFilter) for f in handler.filters):
            handler.addFilter(_RayDataConsoleFilter())


def train_logging_config() -> Any:
    """Ray Train's ``LoggingConfig``: its own INFO lines only when Ray's logs are shown."""
    from ray.train import LoggingConfig

    return LoggingConfig(log_level="INFO" if ray_logs_shown() else "WARNING")
