"""`armor recommend`: top-K for a user history (or a query movie) from a registered model."""

from __future__ import annotations

from pipelines.register import add_recommend_arguments as add_arguments
from pipelines.register import run_recommend as run

__all__ = ["add_arguments", "run"]
