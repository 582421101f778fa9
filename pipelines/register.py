"""`armor register` and `armor recommend`: the MLflow model registry door.

`register` logs a trained model's item embeddings as an MLflow pyfunc (FAISS retrieval inside),
registers it as a new version of `armor-item-embeddings` with alias `challenger`, and moves
`champion-SPLIT` to it only if its validation NDCG@10 beats that protocol's champion (scores of
different splits are never compared); `champion` is `champion-random`. `recommend`
answers a user history (or a query movie) from any model URI, e.g.
`models:/armor-item-embeddings@champion`, exactly as `mlflow models predict` would.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from pipelines.cli import add_common, stage_main

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger("armor.register")

DEFAULT_NAME = "armor-item-embeddings"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workspace", required=True, type=Path, help="workspace whose models/ holds the model")
    parser.add_argument("--model", required=True, help="SPLIT/NAME under WORKSPACE/models (from `armor train`), "
                        "e.g. random/fused")
    parser.add_argument("--name", default=DEFAULT_NAME, help=f"registered model name (default {DEFAULT_NAME})")
    parser.add_argument("--no-promote", action="store_true", help="register as challenger only")
    parser.add_argument("--tracking-uri", default=None,
                        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite in the workspace)")
    add_common(parser)


def register(workspace: Path, model: str, name: str = DEFAULT_NAME, tracking: str | None = None,
             promote: bool = True) -> tuple[str, bool, str]:
    """(version, whether it is champion now, tracking URI)."""
    from armor.tracking.registry import promote as promote_version
    from armor.tracking.registry import register_embeddings
    from armor.tracking.runs import tracking_uri
    from armor.workspace import Workspace

    ws = Workspace(workspace)
    model_dir = ws.models / model
    ws.require(model_dir / "metrics.json", hint=f"train it first (armor train --workspace {workspace} --split "
               "SPLIT --model NAME) and register it as SPLIT/NAME")
    uri = tracking_uri(ws.root, tracking)
    protocol = model.strip("/").split("/")[0]  # models/SPLIT/NAME: the split it was trained on
    with tempfile.TemporaryDirectory(prefix="armor-profiles-") as tmp:
        profiles = write_profiles(ws.split_dir(protocol), Path(tmp) / "profiles.parquet")
        version = register_embeddings(model_dir, name, uri=uri, movies=ws.movies if ws.movies.exists() else None,
                                      profiles=profiles, protocol=protocol)
    champion = promote_version(name, version, uri) if promote else False
    return version, champion, uri


def write_profiles(split_dir: Path, out: Path) -> Path | None:
    """The split's train and validation positives as (user_id, movie_id), in time order per user:
    the users a served model knows by id (the profile its refit trained on). None without the split."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    parts = [split_dir / f"{part}.parquet" for part in ("train", "valid")]
    if not all(p.is_file() for p in parts):
        log.warning("%s: no train/valid parts; the served model will not know users by id", split_dir)
        return None
    table = pa.concat_tables(pq.read_table(p, columns=["user_id", "movie_id", "timestamp"]) for p in parts)
    table = table.sort_by([("user_id", "ascending"), ("timestamp", "ascending")]).select(["user_id", "movie_id"])
    pq.write_table(table, out)
    return out


def run(args: argparse.Namespace) -> int:
    version, champion, uri = register(args.workspace, args.model, args.name, args.tracking_uri,
                                      promote=not args.no_promote)
    protocol = args.model.strip("/").split("/")[0]
    state = (f"champion of {protocol}" if champion
             else f"challenger (the {protocol} champion's validation NDCG@10 is at least as good)")
    print(f"{args.name} version {version} registered at {uri}: {state}")
    return 0


def add_recommend_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=f"models:/{DEFAULT_NAME}@champion",
                        help="an MLflow model URI (default models:/armor-item-embeddings@champion)")
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--history", help="a user's liked movie ids, comma separated: 1,2,3")
    what.add_argument("--similar-to", type=int, help="a movie id: its most similar movies")
    parser.add_argument("-k", type=int, default=10, help="how many movies to recommend (default 10)")
    parser.add_argument("--tracking-uri", default=None, help="default $MLFLOW_TRACKING_URI, else --workspace's sqlite")
    parser.add_argument("--workspace", type=Path, default=None, help="to find the default sqlite tracking store")
    add_common(parser)


def recommend(model_uri: str, history: Sequence[int] | str | None = None, k: int = 10, *,
              similar_to: int | None = None, tracking_uri: str | None = None) -> pd.DataFrame:
    """Top-``k`` (rank, movie_id, score, title) for a user's ``history`` or the movie ``similar_to``,
    answered by the MLflow model at ``model_uri`` exactly as `mlflow models predict` would."""
    import pandas as pd

    from armor.errors import ConfigError
    from armor.tracking.serving import load_registered_model, single_answer

    if (history is None) == (similar_to is None):
        raise ConfigError("recommend: give exactly one of a history or a movie to be similar to")
    model = load_registered_model(model_uri, tracking_uri)
    if history is not None:
        request = pd.DataFrame({"history": [history if isinstance(history, str) else [int(m) for m in history]]})
    else:
        request = pd.DataFrame({"movie_id": [similar_to]})
    return single_answer(model.predict(request, params={"k": int(k)}))


def run_recommend(args: argparse.Namespace) -> int:
    import os

    from armor.errors import ConfigError
    from armor.tracking.runs import tracking_uri

    if args.tracking_uri is None and args.workspace is None and not os.environ.get("MLFLOW_TRACKING_URI"):
        raise ConfigError("--tracking-uri or --workspace (or MLFLOW_TRACKING_URI) is needed to find the registry")
    if args.workspace is not None and not args.workspace.is_dir():
        # Opening an SQLite store would create the folder and an empty database: say what is missing instead.
        raise ConfigError(f"--workspace {args.workspace}: no such workspace (run `armor demo`, or `armor data "
                          "prepare` and `armor train`, to make one)")
    uri = tracking_uri(args.workspace or ".", args.tracking_uri)
    print(recommend(args.model, args.history, args.k, similar_to=args.similar_to, tracking_uri=uri)
          .to_string(index=False))
    return 0


def main(argv: list[str] | None = None) -> int:
    return stage_main(add_arguments, run, "python -m pipelines.register", __doc__ or "", argv)


if __name__ == "__main__":
    raise SystemExit(main())
