"""Progress a user can watch on every long stage: counts, rate and ETA.

On a terminal (stderr is a TTY) a tqdm bar; anywhere else (``ray job submit``, a Ray worker, a file,
CI) one log line at most every ``interval`` seconds and a summary line at the end, e.g.::

    scrape: 12,345/87,585 movies (14.1%), 39.8/s, ETA 30m37s; ok 12,001, not_found 344
    scrape: done, 87,585/87,585 movies in 36m41s, 39.8/s

The lines go through the ``armor.progress`` logger at INFO, so they carry the process's log format,
reach the driver from a Ray worker like any other worker line, and ``-q`` (WARNING) hides them and
the bars alike. ``ARMOR_PROGRESS_INTERVAL`` (seconds, default 30) sets the interval and
``ARMOR_PROGRESS`` (auto, bar, log or off) forces a mode; ``configure`` does the same in code.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from collections.abc import Callable
from typing import Any, Literal, TextIO

from armor.errors import ConfigError

log = logging.getLogger(__name__)

Mode = Literal["auto", "bar", "log", "off"]
MODES: tuple[str, ...] = ("auto", "bar", "log", "off")
INTERVAL_ENV = "ARMOR_PROGRESS_INTERVAL"
MODE_ENV = "ARMOR_PROGRESS"
DEFAULT_INTERVAL = 30.0

_configured: dict[str, Any] = {}  # set by configure(); wins over the environment
_screen: dict[str, Any] = {"bars": 0, "redirect": None}  # tqdm bars open, and the logging redirect they share


def configure(interval: float | None = None, mode: str | None = None) -> None:
    """Set the interval and mode for this process (e.g. in a Ray worker, from the driver's ``settings()``)."""
    if interval is not None:
        _configured["interval"] = _check_interval(interval, "interval")
    if mode is not None:
        _configured["mode"] = _check_mode(mode, "mode")


def settings() -> dict[str, Any]:
    """This process's interval and requested mode (not the resolved one: a worker decides its own TTY)."""
    return {"interval": default_interval(), "mode": _requested_mode()}


def default_interval() -> float:
    if "interval" in _configured:
        return float(_configured["interval"])
    raw = os.environ.get(INTERVAL_ENV)
    if not raw:
        return DEFAULT_INTERVAL
    try:
        return _check_interval(float(raw), INTERVAL_ENV)
    except ValueError:
        raise ConfigError(f"{INTERVAL_ENV}={raw!r}: expected seconds between progress lines, e.g. 30") from None


def _requested_mode() -> str:
    if "mode" in _configured:
        return str(_configured["mode"])
    return _check_mode(os.environ.get(MODE_ENV) or "auto", MODE_ENV)


def _check_interval(value: float, name: str) -> float:
    if not (value > 0 and math.isfinite(value)):
        raise ConfigError(f"{name}={value!r}: expected seconds between progress lines, greater than 0")
    return float(value)


def _check_mode(value: str, name: str) -> str:
    if value not in MODES:
        raise ConfigError(f"{name}={value!r}: expected one of {', '.join(MODES)}")
    return value


def resolve_mode(mode: str | None, stream: TextIO) -> str:
    """``bar``, ``log`` or ``off`` for a progress shown on ``stream``: off when INFO logging is off
    (``-q``), else the requested mode, else a bar on a TTY and log lines elsewhere."""
    if not log.isEnabledFor(logging.INFO):
        return "off"
    requested = _check_mode(mode, "mode") if mode is not None else _requested_mode()
    if requested != "auto":
        return requested
    isatty = getattr(stream, "isatty", None)
    return "bar" if isatty is not None and isatty() else "log"


def format_duration(seconds: float) -> str:
    """``45s``, ``30m37s``, ``2h05m``, ``3d04h``."""
    total = max(0, int(round(seconds)))
    if total < 60:
        return f"{total}s"
    minutes, secs = divmod(total, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def format_rate(count: float, seconds: float, unit: str) -> str:
    """``39.8/s`` at one or more per second; ``3.5 s/epoch`` or ``2m05s/epoch`` below that."""
    if count <= 0 or seconds <= 0:
        return "- /s"
    rate = count / seconds
    if rate >= 1:
        return f"{rate:,.1f}/s"
    per = seconds / count
    return f"{per:.1f} s/{unit}" if per < 60 else f"{format_duration(per)}/{unit}"


def format_value(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:,.0f}" if abs(value) >= 1e4 else f"{value:.4g}"


def plural(unit: str, count: float) -> str:
    return unit if count == 1 or unit.endswith("s") else unit + "s"


class Progress:
    """Counts of ``unit`` toward ``total`` (None: unknown), shown as a bar or as periodic log lines.

    ``initial`` is where a resumed run starts (the rate counts only this run's work). ``summary``:
    write a final line on ``close`` (off for a nested progress whose parent reports the total).
    ``clock`` and ``stream`` are for tests. Use as a context manager or call ``close``.
    """

    def __init__(self, desc: str, total: int | None = None, unit: str = "item", *, initial: int = 0,
                 interval: float | None = None, mode: str | None = None, summary: bool = True, leave: bool = True,
                 stream: TextIO | None = None, clock: Callable[[], float] = time.monotonic):
        self.desc, self.total, self.unit, self.summary = desc, total, unit, summary
        self.n = self.initial = int(initial)
        self.interval = _check_interval(interval, "interval") if interval is not None else default_interval()
        self.stream = stream if stream is not None else sys.stderr
        self.mode = resolve_mode(mode, self.stream)
        self.clock = clock
        self.started = self.last_line = clock()
        self.lines = 0  # periodic lines written so far
        self.postfix: dict[str, Any] = {}
        self.closed = False
        self._bar = self._open_bar(leave) if self.mode == "bar" else None

    def _open_bar(self, leave: bool) -> Any:
        from tqdm.auto import tqdm

        if _screen["bars"] == 0:  # log records print above the bars instead of through them
            from tqdm.contrib.logging import logging_redirect_tqdm

            _screen["redirect"] = logging_redirect_tqdm()
            _screen["redirect"].__enter__()
        _screen["bars"] += 1
        return tqdm(total=self.total, initial=self.initial, desc=self.desc, unit=self.unit, file=self.stream,
                    leave=leave, dynamic_ncols=True)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def update(self, n: int = 1, **postfix: Any) -> None:
        """``n`` more done; ``postfix`` replaces the latest statistics shown after the counts."""
        self.n += int(n)
        if postfix:
            self.set_postfix(**postfix)
        if self._bar is not None:
            self._bar.update(int(n))
        elif self.mode == "log":
            now = self.clock()
            finished = self.total is not None and self.n >= self.total
            if now - self.last_line >= self.interval and not (finished and self.summary):  # the summary follows
                self.last_line = now
                self.lines += 1
                log.info("%s", self.line(now))

    def set_postfix(self, **values: Any) -> None:
        self.postfix = dict(values)
        if self._bar is not None:
            self._bar.set_postfix_str(self._postfix_text(), refresh=False)

    def _postfix_text(self) -> str:
        return ", ".join(f"{key} {format_value(value)}" for key, value in self.postfix.items())

    def line(self, now: float | None = None) -> str:
        """The periodic line: counts, share of the total, rate and ETA, then the postfix."""
        elapsed = (self.clock() if now is None else now) - self.started
        done = self.n - self.initial
        units = plural(self.unit, 2)
        text = f"{self.desc}: {self.n:,}"
        if self.total:
            text += f"/{self.total:,} {units} ({100 * self.n / self.total:.1f}%)"
        else:
            text += f" {units}"
        text += f", {format_rate(done, elapsed, self.unit)}"
        if self.total and 0 < done and self.n < self.total and elapsed > 0:
            text += f", ETA {format_duration(max(self.total - self.n, 0) * elapsed / done)}"
        postfix = self._postfix_text()
        return f"{text}; {postfix}" if postfix else text

    def final_line(self, note: str | None = None) -> str:
        elapsed = self.clock() - self.started
        units = plural(self.unit, 2)
        rate = format_rate(self.n - self.initial, elapsed, self.unit)
        if self.total and self.n < self.total:
            text = (f"{self.desc}: stopped at {self.n:,}/{self.total:,} {units} ({100 * self.n / self.total:.1f}%) "
                    f"after {format_duration(elapsed)}, {rate}")
        else:
            counts = f"{self.n:,}/{self.total:,}" if self.total else f"{self.n:,}"
            text = f"{self.desc}: done, {counts} {units} in {format_duration(elapsed)}, {rate}"
        if note:
            text += f" ({note})"
        postfix = self._postfix_text()
        return f"{text}; {postfix}" if postfix else text

    def close(self, note: str | None = None) -> None:
        """Finish: remove or keep the bar, or write the summary line (``note`` says why it ended)."""
        if self.closed:
            return
        self.closed = True
        if self._bar is not None:
            self._bar.close()
            _screen["bars"] -= 1
            if _screen["bars"] == 0 and _screen["redirect"] is not None:
                _screen.pop("redirect").__exit__(None, None, None)
                _screen["redirect"] = None
            if self.summary:
                log.debug("%s", self.final_line(note))
        elif self.mode == "log" and self.summary:
            log.info("%s", self.final_line(note))
