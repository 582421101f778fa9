"""The report's settings, apart from the report itself: `armor report --help` builds its flags from
this dataclass without importing numpy, torch or matplotlib (tests/unit/test_cli_help.py)."""

from __future__ import annotations

import dataclasses

from armor.config import setting


@dataclasses.dataclass(frozen=True)
class ReportConfig:
    protocols: tuple[str, ...] = setting(("loo", "random"), "splits of Table 1, one table each")
    cold_split: str | None = setting("cold", "split of the item cold-start table (skipped when it is absent)")
    models: tuple[str, ...] | None = setting(None, "model names under WORKSPACE/models/SPLIT (default: every one)")
    query_title: str | None = setting(None, 'the top-5 figure shows a test user who liked this movie, e.g. "Matrix, '
                                            'The (1999)" (default: The Matrix if present, else the most-liked '
                                            "training movie)")
    bootstrap: int = setting(1000, "bootstrap resamples for the 95% CIs")
    seed: int = setting(0, "seed of the bootstrap, the tie order and the figures")
    header: str = ""
