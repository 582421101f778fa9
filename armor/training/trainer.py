"""The one trainer of every trainable model: epochs, early stopping on validation, random streams,
checkpoints and resume (as RecBole's Trainer owns them for its models).

A model provides one epoch of work and its state (``TrainableRecommender``); it never validates
itself. After every ``eval_every`` epochs the trainer measures validation NDCG@10, keeps a
snapshot of the best epoch's weights, and stops after ``patience`` evaluations without
improvement. Test is never read. ``state_dict()`` holds the model's training state, the random
streams and the bookkeeping, so a run stopped after any epoch and resumed from that state ends
exactly where an uninterrupted one does (Ray Train checkpoints it every epoch).

Distributed runs: every rank runs the same epochs on its slice of each global batch; rank 0
alone validates and broadcasts the score, so every rank takes the same stop decision.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
import math
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from armor.config import EvalConfig
from armor.data.splits import SplitData
from armor.errors import OrientationError
from armor.models.base import Recommender, TrainableRecommender
from armor.progress import Progress
from armor.training.selection import SELECT_METRIC, selection_score, validation_data

log = logging.getLogger(__name__)

VALID_KEY = f"val_{SELECT_METRIC}"


class Streams:
    """The random streams of one run, all derived from its seed and saved with its state.

    ``numpy`` and ``torch`` are stateful generators (sampling, initialisation, mining);
    ``epoch_rng(e)`` is a fresh generator for epoch ``e`` alone, so an epoch's draws do not depend
    on how many were drawn before; ``global_torch()`` runs a block on torch's global RNG (dropout)
    restored to this run's own state, leaving the caller's global RNG untouched. Every rank
    seeds the same streams, so "random" choices agree across ranks.
    """

    def __init__(self, seed: int):
        self.seed = int(seed)
        self.numpy = np.random.default_rng(self.seed)
        self.torch = torch.Generator().manual_seed(self.seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            self._global = torch.get_rng_state()

    def epoch_rng(self, epoch: int) -> np.random.Generator:
        return np.random.default_rng(np.random.SeedSequence([self.seed, int(epoch)]))

    @contextlib.contextmanager
    def global_torch(self) -> Iterator[None]:
        with torch.random.fork_rng(devices=[]):
            torch.set_rng_state(self._global)
            yield
            self._global = torch.get_rng_state()

    def state_dict(self) -> dict[str, Any]:
        return {"numpy": self.numpy.bit_generator.state, "torch": self.torch.get_state(), "global": self._global}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.numpy.bit_generator.state = state["numpy"]
        self.torch.set_state(state["torch"])
        self._global = state["global"]


@contextlib.contextmanager
def torch_threads(count: int | None) -> Iterator[None]:
    """Run a block with ``count`` torch intra-op threads (None: unchanged), then put them back."""
    previous = torch.get_num_threads()
    if count is not None:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


class Trainer:
    """Trains one ``TrainableRecommender`` an epoch at a time; see the module docstring."""

    def __init__(self, model: TrainableRecommender, train: sp.csr_matrix, data: SplitData | None = None,
                 eval_config: EvalConfig | None = None, *, rank: int = 0, world_size: int = 1, progress: bool = True,
                 epochs: int | None = None):
        train = sp.csr_matrix(train, dtype=np.float32)
        if data is not None and data.train.shape != train.shape:
            raise OrientationError(f"train has shape {train.shape} but the split is {data.train.shape}; every "
                                   "model expects a user x item matrix: was it transposed?")
        self.model, self.rank, self.world_size = model, rank, world_size
        self.schedule = model.schedule()
        if epochs is not None:  # a refit: the epoch count validation chose, no early stopping
            if data is not None:
                raise ValueError("a fixed epoch count means no validation: pass data=None")
            self.schedule = dataclasses.replace(self.schedule, epochs=int(epochs))
        self.validates = data is not None
        self.data = data if rank == 0 else None
        self.eval_config = eval_config
        self.streams = Streams(self.schedule.seed)
        with torch_threads(self.schedule.num_threads):
            model.begin(train, self.streams, rank=rank, world_size=world_size)
        self.epoch, self.best, self.best_epoch, self.stale = 0, -math.inf, 0, 0
        self.stopped: str | None = None  # why a caller stopped the run early (a search pruning it)
        self.best_snapshot: Any = None
        self.history: list[dict[str, float]] = []
        self.shows_progress = progress and rank == 0  # every rank runs the same epochs: one reports them
        self._progress: Progress | None = None

    def distribute(self, wrapper: Callable[[torch.nn.Module], torch.nn.Module]) -> None:
        """Run the model's forwards through ``wrapper`` (e.g. ``ray.train.torch.prepare_model``)."""
        self.model.distribute(wrapper)

    @property
    def done(self) -> bool:
        return (self.stopped is not None or self.epoch >= self.schedule.epochs
                or (self.validates and self.stale >= self.schedule.patience))

    def stop(self, reason: str) -> None:
        """End the run after the current epoch, keeping its best epoch so far (``reason`` is logged)."""
        self.stopped = reason

    def run_epoch(self) -> dict[str, float]:
        started = time.perf_counter()
        epochs = self._epoch_progress()
        steps = self._step_progress()
        self.model.set_step_hook(None if steps is None else steps.update)
        try:
            with torch_threads(self.schedule.num_threads), self.streams.global_torch():
                stats = self.model.train_epoch(self.epoch, self.streams)
        except BaseException as exc:
            if epochs is not None:  # say where it stopped (and give the terminal back its log lines)
                epochs.close(note=f"{type(exc).__name__} in epoch {self.epoch + 1}")
                self._progress = None
            raise
        finally:
            self.model.set_step_hook(None)
            if steps is not None:
                steps.close()
        self.epoch += 1
        record = {"epoch": self.epoch, **stats, "seconds": time.perf_counter() - started}
        if self.validates and (self.epoch % self.schedule.eval_every == 0 or self.epoch == self.schedule.epochs):
            record[VALID_KEY] = self._validate()
        self.history.append(record)
        # One line per epoch would flood the log with fast epochs: the progress shows the latest
        # epoch's numbers at most every ARMOR_PROGRESS_INTERVAL seconds, and the summary at the end.
        log.debug("%s epoch %d: %s", self.model.name, self.epoch,
                  ", ".join(f"{k} {v:.4g}" for k, v in record.items() if k != "epoch"))
        if epochs is not None:
            epochs.update(1, **self._shown(record))
            if self.done:
                self._close_progress()
        return record

    def _epoch_progress(self) -> Progress | None:
        if self.shows_progress and self._progress is None:
            self._progress = Progress(self.model.name, total=self.schedule.epochs, unit="epoch", initial=self.epoch)
        return self._progress

    def _step_progress(self) -> Progress | None:
        """This epoch's steps, for epochs long enough to show them (a line only after an interval)."""
        total = self.model.steps_per_epoch() if self.shows_progress else None
        if total is None:  # models without steps (implicit's BPR and ALS fit a whole epoch in one call)
            return None
        return Progress(f"{self.model.name} epoch {self.epoch + 1}/{self.schedule.epochs}", total=total,
                        unit="step", summary=False, leave=False)

    def _shown(self, record: dict[str, float]) -> dict[str, Any]:
        shown: dict[str, Any] = {k: v for k, v in record.items() if k not in ("epoch", "seconds")}
        if self.validates and self.best_epoch:
            shown["best"] = f"{self.best:.4g} @ epoch {self.best_epoch}"
        return shown

    def _close_progress(self) -> None:
        if self._progress is not None:
            early = self.validates and self.stale >= self.schedule.patience and self.epoch < self.schedule.epochs
            note = f"early stop: no better validation in {self.stale} evaluations" if early else None
            self._progress.close(note=self.stopped or note)

    def _validate(self) -> float:
        score = None
        if self.data is not None:
            with torch_threads(self.schedule.num_threads):
                score = selection_score(self.model, self.data, self.eval_config)
        score = _broadcast(score, self.world_size)
        if score > self.best:
            self.best, self.best_epoch, self.stale = score, self.epoch, 0
            self.best_snapshot = self.model.snapshot()
        else:
            self.stale += 1
        return score

    def fit(self, on_epoch: Callable[[dict[str, float], Trainer], None] | None = None) -> TrainableRecommender:
        """Train until done, calling ``on_epoch(record, trainer)`` after each epoch; returns the model."""
        while not self.done:
            record = self.run_epoch()
            if on_epoch is not None:
                on_epoch(record, self)
                if self.stopped is not None:
                    log.info("%s: stopped after epoch %d: %s", self.model.name, self.epoch, self.stopped)
        return self.finish()

    def finish(self) -> TrainableRecommender:
        """Keep the best validation epoch's weights (the last ones without validation)."""
        self._close_progress()
        if self.best_snapshot is not None:
            self.model.restore(self.best_snapshot)
            log.info("%s: kept epoch %d (validation %s %.4f)", self.model.name, self.best_epoch, SELECT_METRIC,
                     self.best)
        self.model.end()
        self.model.record_training(self.history, self.best_epoch or self.epoch,
                                   self.best if self.best_snapshot is not None else None)
        return self.model

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "streams": self.streams.state_dict(), "epoch": self.epoch,
                "best": self.best, "best_epoch": self.best_epoch, "stale": self.stale,
                "best_snapshot": copy.deepcopy(self.best_snapshot), "history": list(self.history)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.streams.load_state_dict(state["streams"])
        self.epoch, self.best, self.best_epoch = state["epoch"], state["best"], state["best_epoch"]
        self.stale, self.best_snapshot, self.history = state["stale"], state["best_snapshot"], list(state["history"])


def _broadcast(value: float | None, world_size: int) -> float:
    """Rank 0's validation score on every rank (it alone evaluates)."""
    if world_size == 1:
        assert value is not None
        return float(value)
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return float(box[0])


def fit(model: Recommender, train: sp.csr_matrix, valid: sp.csr_matrix | None = None, *,
        data: SplitData | None = None, eval_config: EvalConfig | None = None,
        epochs: int | None = None,
        on_epoch: Callable[[dict[str, float], Trainer], None] | None = None) -> Recommender:
    """Fit any model: trainable ones through the ``Trainer`` (early-stopped on ``data``'s validation
    part, or on ``valid`` alone; or, with ``epochs``, for exactly that many epochs and no
    validation; ``on_epoch`` as in ``Trainer.fit``), the others in one call. ``data.test`` is never
    read."""
    if not isinstance(model, TrainableRecommender):
        return model.fit(train)
    if data is None and valid is not None:
        data = validation_data(sp.csr_matrix(train), sp.csr_matrix(valid))
    return Trainer(model, train, data, eval_config, epochs=epochs).fit(on_epoch)
