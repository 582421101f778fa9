"""One epoch of optimisation over any iterable of batch dicts.

The same function runs over a ``PairSampler`` in a unit test and over ``iter_torch_batches()`` or a
sampler inside Ray Train's ``train_loop_per_worker``: what a batch means is the ``model_step``'s
business, not the loop's.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

from armor.errors import ArmorError


class TrainingError(ArmorError):
    """Training diverged or could not run."""


def train_epoch(model_step: Callable[[dict[str, Tensor]], Tensor], batches: Iterable[dict[str, Tensor]],
                optimizer: torch.optim.Optimizer, *, grad_scale: float = 1.0,
                on_step: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Run ``model_step`` on every batch and step ``optimizer``; the caller sets train/eval mode.

    ``grad_scale`` multiplies the loss before ``backward`` only (the reported loss is unscaled):
    pass the world size when every rank computes the same global loss and DDP averages gradients.
    ``on_step(1)`` is called after every step (progress of a long epoch).
    Returns {"loss": mean loss, "steps", "seconds", "pairs_per_s"}; pairs are rows of the
    batch's "anchor" entry (or of its first entry).
    """
    total, steps, pairs = 0.0, 0, 0
    start = time.perf_counter()
    for batch in batches:
        optimizer.zero_grad(set_to_none=True)
        loss = model_step(batch)
        value = float(loss.detach())
        if not math.isfinite(value):
            raise TrainingError(f"loss is {value} at step {steps + 1}; lower train.lr or check the features "
                                "for NaN / infinite values")
        (loss * grad_scale if grad_scale != 1.0 else loss).backward()
        optimizer.step()
        total += value
        steps += 1
        first = batch["anchor"] if "anchor" in batch else next(iter(batch.values()))
        pairs += int(first.shape[0])
        if on_step is not None:
            on_step(1)
    seconds = time.perf_counter() - start
    return {"loss": total / steps if steps else float("nan"), "steps": steps, "seconds": seconds,
            "pairs_per_s": pairs / seconds if seconds > 0 else float("nan")}
