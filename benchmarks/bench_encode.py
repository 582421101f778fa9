"""Encoding throughput through the whole Ray Data job vs a bare torch loop, in the same run.

Images: the job (read scrape Parquet -> decode/preprocess -> encoder actor -> feature Parquet)
against a plain forward loop of the same encoder over the same images, already decoded.
Text: the job with text only against the bare sentence-transformers loop.
Throughput of the job is measured at steady state from the feature rows' own timestamps
(actor start-up and model load excluded, reported separately). Target on this CPU machine:
job >= 0.8 of the bare loop.

``--quick``: the same two jobs, loops and figures over 8 movies (16 images, batch 4) and 64
overviews (batch 16), in well under a minute; tests/integration/test_bench_quick.py runs it.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from armor.config import EncodeConfig
from armor.data.synthetic import SyntheticConfig, SyntheticWorld
from armor.features.image import ImageEncoder, preprocess_image
from armor.features.store import FeatureStore
from armor.features.text import TextEncoder
from armor.tmdb.scrape import SCRAPE_SCHEMA, ScrapeStore


def write_scrape(ws: Path, world: SyntheticWorld, movie_ids, images: bool) -> list[dict]:
    rows = []
    for m in movie_ids:
        rows.append({"movie_id": m, "tmdb_id": m + 100000, "status": "ok", "overview": world.overview(m),
                     "poster": world.poster(m) if images else None,
                     "thumbnail": world.thumbnail(m) if images else None, "scraped_at": 1000, "genres": []})
    store = ScrapeStore(ws / "tmdb")
    for start in range(0, len(rows), 64):
        store.write_part(pa.Table.from_pylist(rows[start:start + 64], schema=SCRAPE_SCHEMA))
    return rows


def steady_rate(ws: Path, per_row: int, batch_size: int) -> tuple[float, float]:
    """(items/s after the first batch, seconds from the first to the last stored row)."""
    table = FeatureStore.open(ws / "features").read(["encoded_at"])
    stamps = np.sort(table["encoded_at"].cast(pa.int64()).to_numpy()) / 1000.0
    first, last = stamps[batch_size - 1], stamps[-1]
    return (len(stamps) - batch_size) * per_row / (last - first), last - stamps[0]


# (movies, texts, image batch, text batch): the full run's sizes and --quick's.
FULL = {"movies": 160, "texts": 1682, "batch_size": 32, "text_batch_size": 64}
QUICK = {"movies": 8, "texts": 64, "batch_size": 4, "text_batch_size": 16}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--movies", type=int,
                        help=f"movies for the image run, 2 images each (default {FULL['movies']})")
    parser.add_argument("--texts", type=int, help=f"overviews for the text run (default {FULL['texts']})")
    parser.add_argument("--backbone", default="efficientnet-lite0")
    parser.add_argument("--weights", default="imagenet")
    parser.add_argument("--batch-size", type=int, help=f"images per batch (default {FULL['batch_size']})")
    parser.add_argument("--text-batch-size", type=int, help=f"overviews per batch (default {FULL['text_batch_size']})")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes ({}): same jobs, loops and figures in seconds".format(
                            ", ".join(f"{k.replace('_', '-')} {v}" for k, v in QUICK.items())))
    args = parser.parse_args(argv)
    for name, value in (QUICK if args.quick else FULL).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    run(args)


def run(args: argparse.Namespace) -> None:
    from pipelines.cli import setup_logging
    from pipelines.encode import encode
    from pipelines.ray_utils import ray_session

    text_batch = args.text_batch_size

    setup_logging(-1)
    world = SyntheticWorld(SyntheticConfig.preset("ml-100k"))
    device = None if args.device == "auto" else args.device
    with tempfile.TemporaryDirectory() as image_dir, tempfile.TemporaryDirectory() as text_dir, ray_session():
        rows = write_scrape(Path(image_dir), world, range(1, args.movies + 1), images=True)
        pixels = np.stack([preprocess_image(r[c]) for r in rows for c in ("poster", "thumbnail")])
        encoder = ImageEncoder(args.backbone, args.weights, device=device)
        encoder(pixels[: args.batch_size])  # warm-up, as the job's first batch is excluded too
        started = time.perf_counter()
        for start in range(0, len(pixels), args.batch_size):
            encoder(pixels[start:start + args.batch_size])
        bare_images = len(pixels) / (time.perf_counter() - started)

        config = EncodeConfig(image_backbone=args.backbone, image_weights=args.weights, device=args.device,
                              modalities=("poster", "thumbnail"), batch_size=args.batch_size)
        summary = encode(Path(image_dir), config)
        job_images, span = steady_rate(Path(image_dir), 2, args.batch_size)

        texts = [world.overview(m) for m in range(1, args.texts + 1)]
        write_scrape(Path(text_dir), world, range(1, args.texts + 1), images=False)
        text_encoder = TextEncoder(device=device)
        text_encoder(texts[:text_batch])
        started = time.perf_counter()
        for start in range(0, len(texts), text_batch):
            text_encoder(texts[start:start + text_batch])
        bare_text = len(texts) / (time.perf_counter() - started)
        text_summary = encode(Path(text_dir), EncodeConfig(modalities=("text",), batch_size=text_batch,
                                                           device=args.device))
        job_text, text_span = steady_rate(Path(text_dir), 1, text_batch)

    print(f"images: {len(pixels)} ({args.backbone}, {args.weights}, batch {args.batch_size}, device {encoder.device})")
    print(f"  bare torch loop over decoded images: {bare_images:.2f} images/s")
    print(f"  Ray Data job at steady state:        {job_images:.2f} images/s "
          f"(whole job incl. actor start-up: {summary['images_per_second']:.2f} images/s)")
    print(f"  ratio job / bare: {job_images / bare_images:.3f}  (target >= 0.8)")
    print(f"text: {len(texts)} overviews")
    print(f"  bare sentence-transformers loop: {bare_text:.1f} sentences/s")
    print(f"  Ray Data job at steady state:    {job_text:.1f} sentences/s "
          f"(whole job: {text_summary['encoded_this_run'] / max(text_summary['seconds'], 1e-9):.1f}/s)")
    print(f"  ratio job / bare: {job_text / bare_text:.3f}  (target >= 0.8)")


if __name__ == "__main__":
    main()
