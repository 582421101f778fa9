"""How long a trainable model trains and how often it is validated (kept free of torch, so model
modules that only describe their schedule import quickly)."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Schedule:
    """How long a model trains and how often it is validated; ``patience`` counts evaluations."""

    epochs: int
    patience: int
    seed: int
    eval_every: int = 1
    num_threads: int | None = None  # torch intra-op threads while training; None: leave as is
