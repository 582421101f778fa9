"""Encode the scraped overviews, posters and thumbnails into a Parquet feature store on Ray Data.

Reads WORKSPACE/tmdb/ (from `armor scrape`), decodes and preprocesses images in CPU tasks,
embeds text and images in an encoder actor pool (one actor per GPU when there are GPUs, else
CPU actors), and writes WORKSPACE/features/: movie_id, text_emb, poster_emb, thumb_emb and a
status per modality. Resumable like the scrape: a rerun encodes only movies not yet encoded,
or re-scraped since; an image that does not decode is recorded, never fatal.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from armor.config import EncodeConfig
from pipelines.cli import add_common, add_dataclass_arguments, dataclass_from_args, stage_main
from pipelines.tracking import add_tracking_arguments, stage_run, tracking_from_args

if TYPE_CHECKING:
    import pyarrow as pa

    from armor.features.store import FeatureStore
    from armor.tmdb.scrape import ScrapeStore

log = logging.getLogger("armor.encode")

SCRAPE_COLUMNS = ["movie_id", "overview", "poster", "thumbnail", "scraped_at"]


class EncodeWorker:
    """Ray Data actor: loads the encoders once, embeds a batch, writes it as one feature part."""

    def __init__(self, config: EncodeConfig, store_dir: str, dims: dict[str, int], encoders: dict[str, Any],
                 use_all_cores: bool):
        import os

        # Hugging Face's download and "Loading weights" bars would land in the job's log, once per actor.
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        from armor.features.image import ImageEncoder
        from armor.features.store import FeatureStore
        from armor.features.text import TextEncoder

        device = None if config.device == "auto" else config.device
        # Ray pins OMP_NUM_THREADS=1 in its workers; a CPU encoder should use the cores of the
        # node it actually landed on, which the driver cannot know on a cluster.
        num_threads = len(os.sched_getaffinity(0)) if use_all_cores else None
        self.config = config
        self.text = TextEncoder(config.text_model, device=device, num_threads=num_threads) \
            if "text" in config.modalities else None
        self.image = ImageEncoder(config.image_backbone, config.image_weights, device=device,
                                  amp_dtype=config.amp_dtype, num_threads=num_threads) \
            if {"poster", "thumbnail"} & set(config.modalities) else None
        self.store = FeatureStore(store_dir, dims, encoders)

    def __call__(self, batch: dict) -> dict:
        import numpy as np

        from armor.features.store import encode_rows

        table = encode_rows(batch, self.config.modalities, self.text, self.image, self.store.schema)
        self.store.write_part(table)
        out = {"movie_id": table["movie_id"].to_numpy()}
        for modality in ("text", "poster", "thumbnail"):
            out[f"{modality}_status"] = np.array(table[f"{modality}_status"].to_pylist(), dtype=object)
        return out


def describe_encoders(config: EncodeConfig) -> tuple[dict[str, int], dict[str, Any]]:
    """Dimensions and metadata of the configured encoders, read without loading the models."""
    from armor.features.image import image_encoder_metadata
    from armor.features.text import text_encoder_metadata

    encoders: dict[str, Any] = {}
    if "text" in config.modalities:
        encoders["text"] = text_encoder_metadata(config.text_model)
    if {"poster", "thumbnail"} & set(config.modalities):
        image = image_encoder_metadata(config.image_backbone, config.image_weights)
        for modality in ("poster", "thumbnail"):
            if modality in config.modalities:
                encoders[modality] = image
    return {m: int(e["dim"]) for m, e in encoders.items()}, encoders


def encode(workspace: Path, config: EncodeConfig, *, overwrite: bool = False, limit: int | None = None,
           features_dir: Path | None = None) -> dict[str, Any]:
    """Encode every scraped movie not yet in the feature store (with these encoders); returns a summary."""
    from armor.features.store import FeatureStore
    from armor.tmdb.scrape import ScrapeStore
    from armor.workspace import Workspace

    ws = Workspace(workspace)
    scraped = ScrapeStore(ws.tmdb)
    if not scraped.parts():
        from armor.errors import DataError

        raise DataError("nothing scraped yet; run `armor scrape --workspace WORKSPACE` first", path=ws.tmdb)
    scraped.compact()
    dims, encoders = describe_encoders(config)
    store = FeatureStore(features_dir or ws.features, dims, encoders)
    store.claim(overwrite=overwrite)
    store.compact()
    todo, scraped_movies = _pending(scraped, store, limit)
    log.info("encode: %d scraped movies, %d to encode with %s", scraped_movies, len(todo),
             {m: f"{e.get('backbone') or e.get('model')} ({e['dim']}-d)" for m, e in encoders.items()})
    counts: dict[str, dict[str, int]] = {m: {} for m in ("text", "poster", "thumbnail")}
    started = time.monotonic()
    if todo:
        started = _run_job(scraped, store, config, dims, encoders, todo, counts)
        store.compact()
    return _summary(store, counts, len(todo), time.monotonic() - started, encoders)


def _pending(scraped: ScrapeStore, store: FeatureStore, limit: int | None) -> tuple[list[int], int]:
    """Movies whose current scrape has no features yet (sorted), and how many movies are scraped."""
    import pyarrow as pa

    done = store.done()
    index = scraped.read(["movie_id", "scraped_at"])
    keys = zip(index["movie_id"].to_pylist(), index["scraped_at"].cast(pa.int64()).to_pylist())
    todo = sorted(m for m, t in keys if (m, t) not in done)
    return (todo if limit is None else todo[:limit]), index.num_rows


def _run_job(scraped: ScrapeStore, store: FeatureStore, config: EncodeConfig, dims: dict[str, int],
             encoders: dict[str, Any], todo: list[int], counts: dict[str, dict[str, int]]) -> float:
    """The Ray Data job: CPU decode tasks feeding an encoder actor pool; counts statuses as parts land.
    Returns when the encoding itself started (after Ray's start-up)."""
    import pyarrow as pa
    import ray

    from armor.features.image import preprocess_batch
    from armor.progress import Progress
    from pipelines.ray_utils import quiet_ray_data, ray_session

    with ray_session():
        quiet_ray_data()
        gpus = int(ray.cluster_resources().get("GPU", 0))
        use_gpu = gpus > 0 and config.device != "cpu"
        actors = config.actors or (gpus if use_gpu else 1)
        # On CPU, one actor holds one CPU for Ray's accounting but runs torch on every core
        # of its node; the decode tasks take the remaining slot and overlap with it.
        wanted = pa.array(todo, pa.int32())
        ds = (ray.data.read_parquet([str(p) for p in scraped.parts()], columns=SCRAPE_COLUMNS)
              .map_batches(keep_movies, fn_kwargs={"wanted": wanted}, batch_format="pyarrow", batch_size=None))
        images = [m for m in ("poster", "thumbnail") if m in config.modalities]
        if images and not config.device_decode:  # else the encoder actor decodes the bytes on its device
            ds = ds.map_batches(preprocess_batch, fn_kwargs={"columns": images}, batch_size=config.batch_size,
                                batch_format="numpy", num_cpus=1)
        ds = ds.map_batches(EncodeWorker, batch_size=config.batch_size, batch_format="numpy",
                            fn_constructor_kwargs={"config": config, "store_dir": str(store.directory), "dims": dims,
                                                   "encoders": encoders, "use_all_cores": not use_gpu},
                            compute=ray.data.ActorPoolStrategy(size=actors),
                            num_gpus=1 if use_gpu else 0, num_cpus=1)
        bar = Progress("encode", total=len(todo), unit="movie")  # a bar on a terminal, periodic lines elsewhere
        started = time.monotonic()
        try:
            for batch in ds.iter_batches(batch_format="numpy", batch_size=None):
                for modality in counts:
                    for status in batch[f"{modality}_status"]:
                        counts[modality][status] = counts[modality].get(status, 0) + 1
                bar.update(len(batch["movie_id"]), **{f"{m} ok": counts[m].get("ok", 0) for m in config.modalities})
        finally:
            bar.close()
    return started


def _summary(store: FeatureStore, counts: dict[str, dict[str, int]], encoded: int, elapsed: float,
             encoders: dict[str, Any]) -> dict[str, Any]:
    import pyarrow.compute as pc

    table = store.read(["movie_id", "text_status", "poster_status", "thumbnail_status"])
    stored = {m: {s: int(c) for s, c in zip(*_counts(table[f"{m}_status"]))} for m in counts}
    images = sum(counts[m].get("ok", 0) for m in ("poster", "thumbnail"))
    undecodable = pc.or_(pc.equal(table["poster_status"], "undecodable"),
                         pc.equal(table["thumbnail_status"], "undecodable"))
    return {"encoded_this_run": encoded, "this_run": counts, "stored": stored, "movies": table.num_rows,
            "seconds": round(elapsed, 2),
            "images_per_second": round(images / elapsed, 2) if encoded and elapsed else 0.0,
            "encoders": encoders, "directory": str(store.directory),
            "undecodable_movie_ids": sorted(set(pc.filter(table["movie_id"], undecodable).to_pylist()))[:50]}


def keep_movies(batch: pa.Table, wanted: pa.Array) -> pa.Table:
    import pyarrow.compute as pc

    return batch.filter(pc.is_in(batch["movie_id"], value_set=wanted))


def _counts(column: pa.ChunkedArray) -> tuple[list, list]:
    import pyarrow.compute as pc

    counts = pc.value_counts(column)
    return counts.field("values").to_pylist(), counts.field("counts").to_pylist()


def format_summary(summary: dict[str, Any]) -> str:
    lines = [f"Features: {summary['movies']} movies in {summary['directory']}; this run encoded "
             f"{summary['encoded_this_run']} in {summary['seconds']} s ({summary['images_per_second']} images/s)"]
    for modality, statuses in summary["stored"].items():
        meta = summary["encoders"].get(modality)
        name = "skipped" if meta is None else \
            f"{meta.get('backbone') or meta.get('model')} {meta.get('weights', '')}".strip()
        lines.append(f"  {modality:9s} [{name}]: " + ", ".join(f"{k} {v}" for k, v in sorted(statuses.items())))
    if summary["undecodable_movie_ids"]:
        lines.append(f"  undecodable images for movie ids: {summary['undecodable_movie_ids']}")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workspace", required=True, type=Path, help="workspace written by `armor scrape`")
    add_dataclass_arguments(parser, EncodeConfig)
    parser.add_argument("--features-dir", type=Path, default=None, help="default WORKSPACE/features")
    parser.add_argument("--overwrite", action="store_true", help="re-encode when the encoders changed")
    parser.add_argument("--limit", type=int, default=None, help="encode only the first N pending movies")
    add_tracking_arguments(parser)
    add_common(parser)


def run(args: argparse.Namespace) -> int:
    from pipelines.scrape import flat_numbers

    config = dataclass_from_args(EncodeConfig, args)
    with stage_run("encode", args.workspace, config, tracking=tracking_from_args(args)) as tracked:
        summary = encode(args.workspace, config, overwrite=args.overwrite, limit=args.limit,
                         features_dir=args.features_dir)
        if tracked is not None:
            tracked.log_metrics(flat_numbers({k: v for k, v in summary.items() if k != "encoders"}))
            tracked.log_artifact(Path(summary["directory"]) / "encoders.json")
            tracked.set_tags({f"encoder.{m}": e.get("backbone") or e.get("model")
                              for m, e in summary["encoders"].items()})
    print(format_summary(summary))
    return 0


def main(argv: list[str] | None = None) -> int:
    return stage_main(add_arguments, run, "python -m pipelines.encode", __doc__ or "", argv)


if __name__ == "__main__":
    raise SystemExit(main())
