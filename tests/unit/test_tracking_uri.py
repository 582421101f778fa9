"""``using_tracking_uri`` points MLflow's fluent API somewhere for a block and puts everything back
through MLflow's public setters: the URIs, the variables child processes inherit, and where traces go."""

import os

import mlflow
import pytest
from mlflow import MlflowClient

from armor.tracking.runs import _explicit_uris, using_tracking_uri


def state():
    return (mlflow.get_tracking_uri(), mlflow.get_registry_uri(), _explicit_uris(),
            os.environ.get("MLFLOW_TRACKING_URI"), os.environ.get("MLFLOW_REGISTRY_URI"))


def test_the_block_sets_both_uris_and_puts_back_what_was_there(tmp_path):
    outer, inner = f"sqlite:///{tmp_path / 'outer.db'}", f"sqlite:///{tmp_path / 'inner.db'}"
    before = state()
    with using_tracking_uri(outer):
        # The private names read back what the public setters stored: fails if the pinned MLflow moves them.
        assert _explicit_uris() == (outer, outer)
        with using_tracking_uri(inner):
            assert (mlflow.get_tracking_uri(), mlflow.get_registry_uri()) == (inner, inner)
            assert os.environ["MLFLOW_TRACKING_URI"] == inner  # what a child process started here inherits
        assert state()[:3] == (outer, outer, (outer, outer))
    assert state() == before


@pytest.mark.slow
def test_traces_after_the_block_go_where_mlflow_pointed_before_it(tmp_path):
    outer, inner = f"sqlite:///{tmp_path / 'outer.db'}", f"sqlite:///{tmp_path / 'inner.db'}"
    with using_tracking_uri(outer):
        with using_tracking_uri(inner):
            with mlflow.start_span("inside"):
                pass
        # Restoring the URI by assignment kept the tracer provider built for `inner`: this went there too.
        with mlflow.start_span("after"):
            pass
        mlflow.flush_trace_async_logging()

    def names(uri):
        return sorted(t.data.spans[0].name for t in MlflowClient(uri).search_traces(locations=["0"]))

    assert names(inner) == ["inside"]
    assert names(outer) == ["after"]
