"""The one contract every recommender answers, whatever it learns from.

A model scores a batch of users given their profiles (their positives as CSR rows over the
catalogue). Embedding models answer through ``item_embeddings`` and ``user_embeddings`` and get
``score`` (cosine) for free; interaction models may score directly.

Models that learn over epochs are ``TrainableRecommender``s: they provide one epoch of work, their
training state and their fitted weights, and ``armor.training.trainer.Trainer`` does the rest
(early stopping on validation, random streams, checkpoints, resume). The others fit in one call.

A saved model is a directory: ``model.json`` (its registry name, constructor params and training
summary) and ``arrays.npz`` (its fitted arrays), written all-or-nothing. ``load_recommender`` finds
the class through the registry (``armor.models.registry``), so one name means one model everywhere.
"""

from __future__ import annotations

import abc
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from armor.errors import DataError
from armor.io import atomic_path

if TYPE_CHECKING:
    import scipy.sparse as sp
    import torch

    from armor.config import EvalConfig
    from armor.data.splits import SplitData
    from armor.training.schedule import Schedule
    from armor.training.trainer import Streams

MODEL_FILE = "model.json"
ARRAYS_FILE = "arrays.npz"


class Recommender(abc.ABC):
    """Base class. Subclasses set ``name`` (their registry name) and implement ``score`` (or embeddings)."""

    name: str
    # What training recorded (the Trainer sets them; a saved model keeps them).
    history: list[dict[str, float]] | tuple = ()
    best_epoch: int | None = None
    best_score: float | None = None

    def fit(self, train: sp.csr_matrix, valid: sp.csr_matrix | None = None) -> Recommender:
        """Learn from the (users x items) binary training matrix. Nothing to learn by default."""
        return self

    @abc.abstractmethod
    def score(self, users: np.ndarray, history: sp.csr_matrix) -> np.ndarray:
        """Scores (B, n_items), higher is better, for user rows ``users`` with profiles ``history``.

        Returns a fresh array: the evaluator masks it in place.
        """

    def item_embeddings(self) -> np.ndarray | None:
        return None

    def user_embeddings(self, history: sp.csr_matrix) -> np.ndarray | None:
        return None

    # Persistence: constructor params plus named arrays.
    def params(self) -> dict[str, Any]:
        return {}

    def arrays(self) -> dict[str, np.ndarray]:
        return {}

    def load_arrays(self, arrays: dict[str, np.ndarray]) -> None:  # noqa: B027 - nothing to restore by default
        """Restore fitted state written by ``arrays``."""

    def record_training(self, history: list[dict[str, float]], best_epoch: int | None,
                        best_score: float | None) -> None:
        self.history, self.best_epoch, self.best_score = list(history), best_epoch, best_score

    def training_summary(self) -> dict[str, Any]:
        return {"history": list(self.history), "best_epoch": self.best_epoch, "best_score": self.best_score}

    def save(self, directory: str | Path) -> Path:
        meta = {"name": self.name, "params": self.params(), "training": self.training_summary()}
        with atomic_path(directory) as tmp:
            tmp.mkdir(parents=True)
            (tmp / MODEL_FILE).write_text(json.dumps(meta, indent=2))
            np.savez(tmp / ARRAYS_FILE, **self.arrays())
        return Path(directory)


class TrainableRecommender(Recommender):
    """A model the one ``Trainer`` trains an epoch at a time.

    ``begin`` sets up the optimiser and samplers for a training matrix; ``train_epoch`` does one
    epoch and leaves the model scorable; ``state_dict`` / ``load_state_dict`` hold what resuming
    needs besides the trainer's own streams; ``snapshot`` / ``restore`` copy the fitted weights
    (the best epoch's are kept). ``end`` runs once training is over.
    """

    @abc.abstractmethod
    def schedule(self) -> Schedule:
        """Epochs, patience (in evaluations), evaluation interval, seed."""

    @abc.abstractmethod
    def begin(self, train: sp.csr_matrix, streams: Streams, *, rank: int = 0, world_size: int = 1) -> None:
        """Prepare to train on ``train``; this rank handles its share of ``world_size``."""

    @abc.abstractmethod
    def train_epoch(self, epoch: int, streams: Streams) -> dict[str, float]:
        """One epoch (0-based ``epoch``); returns its statistics, e.g. {"loss": ...}."""

    @abc.abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """Weights and optimiser state, copied (later steps must not change it)."""

    @abc.abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a ``state_dict`` of a model built with the same config and data."""

    @abc.abstractmethod
    def snapshot(self) -> Any:
        """A copy of the fitted weights as they are now."""

    @abc.abstractmethod
    def restore(self, snapshot: Any) -> None:
        """Put back the weights of a ``snapshot``."""

    # Set by the Trainer for the length of one epoch (``set_step_hook``); None otherwise.
    _step_hook: Callable[[int], None] | None = None

    def steps_per_epoch(self) -> int | None:
        """Optimisation steps in one epoch, where the model knows them (shown for long epochs)."""
        return None

    def set_step_hook(self, hook: Callable[[int], None] | None) -> None:
        """The Trainer's progress for the coming epoch: ``train_epoch`` calls ``steps_done(n)``, which calls it."""
        self._step_hook = hook

    def steps_done(self, n: int = 1) -> None:
        """Report ``n`` more optimisation steps of the current epoch (cheap when nobody listens)."""
        if self._step_hook is not None:
            self._step_hook(n)

    def distribute(self, wrapper: Callable[[torch.nn.Module], torch.nn.Module]) -> None:
        """Run forwards through ``wrapper`` (DistributedDataParallel); a no-op for models without modules."""

    def end(self) -> None:
        """Training is over: release what only training needed."""

    def fit(self, train: sp.csr_matrix, valid: sp.csr_matrix | None = None, *, data: SplitData | None = None,
            eval_config: EvalConfig | None = None) -> TrainableRecommender:
        """Train with the ``Trainer``: early-stopped on ``data``'s validation part (or ``valid``)."""
        from armor.training.trainer import fit

        return fit(self, train, valid, data=data, eval_config=eval_config)


def load_recommender(directory: str | Path) -> Recommender:
    """The model saved in ``directory`` by ``Recommender.save``, ready to score."""
    from armor.models.registry import model_class

    directory = Path(directory)
    try:
        meta = json.loads((directory / MODEL_FILE).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"not a saved ARMoR model ({exc})", path=directory / MODEL_FILE) from exc
    cls = model_class(meta.get("name"), where=directory / MODEL_FILE)
    model = cls(**meta.get("params", {}))
    with np.load(directory / ARRAYS_FILE) as arrays:
        model.load_arrays({name: arrays[name] for name in arrays.files})
    training = meta.get("training", {})
    model.record_training(training.get("history", []), training.get("best_epoch"), training.get("best_score"))
    return model


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), eps)


class EmbeddingRecommender(Recommender):
    """A model whose items live in a vector space; users are the mean of their liked items.

    Scores are cosine similarities (the paper's eq. 4.8). A user with an empty profile gets a
    zero vector and therefore all-zero scores: an exact tie, ordered by the evaluator's tie rule
    (``armor.eval.metrics``).
    """

    @abc.abstractmethod
    def item_embeddings(self) -> np.ndarray:
        """(n_items, d) float32."""

    def user_embeddings(self, history: sp.csr_matrix) -> np.ndarray:
        items = self.item_embeddings()
        counts = np.asarray(history.sum(axis=1), dtype=np.float32)  # (B, 1)
        summed = np.asarray(history @ items, dtype=np.float32)  # (B, d)
        return summed / np.maximum(counts, 1.0)

    def score(self, users: np.ndarray, history: sp.csr_matrix) -> np.ndarray:
        users_vec = l2_normalize(self.user_embeddings(history))  # (B, d)
        items_vec = l2_normalize(self.item_embeddings())  # (I, d)
        return (users_vec @ items_vec.T).astype(np.float32, copy=False)  # (B, I)
