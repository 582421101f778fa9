"""GPU throughput in one run (about 3-5 minutes on one H200-class GPU with 16 CPU cores; at most 8).

1. images: ResNet-50 (bf16 autocast, channels_last) features from JPEG bytes: TMDB-sized posters
   (500x750) and trailer thumbnails (480x360), synthetic artwork with film grain, JPEG quality 85.
   Four figures from the same bytes: a bare loop decoding on the GPU (``ImageEncoder.encode_images``:
   nvJPEG, resize and crop there), a bare loop decoding with Pillow on the CPU (``preprocess_batch``,
   its thread pool, then the encoder), and the Ray Data encode job (read Parquet -> encoder actor ->
   feature Parquet) both ways (``EncodeConfig.device_decode`` on, and off: CPU decode tasks).
   Job rates are steady state, from the stored rows' timestamps (actor start-up and model load
   excluded). Targets: the job with GPU decoding >= 3,000 images/s and >= 0.8 of its bare loop.
2. text: all-MiniLM-L6-v2 sentences/s, a bare loop.
3. fused: anchor-positive pairs/s of the full fusion's training (the one Trainer, one worker) on
   the ML-1M shape (6,040 users x 3,706 movies, text 384-d, poster and thumbnail 2048-d).
4. LightGCN: seconds per epoch on the ML-1M shape (dim 64, 3 layers, batch 2048), median after the
   first epoch.
5. FAISS: exact (flat, inner product) top-100 queries/s over 1M x 128, GPU index against CPU index,
   raw index searches; and ``ItemIndex.search`` end to end (tie refetches and id mapping included).

``--dry-run``: every section on the CPU at tiny sizes, through the same code up to the device
(the GPU-decode path decodes with torchvision on the CPU; FAISS falls back to its CPU index),
in well under a minute of work; tests/integration/test_bench_gpu.py runs it.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
from PIL import Image

from armor.data.synthetic import SyntheticConfig, SyntheticWorld

SECTIONS = ("images", "text", "fused", "lightgcn", "faiss")
POSTER, THUMBNAIL = (500, 750), (480, 360)


@dataclasses.dataclass(frozen=True)
class Sizes:
    movies: int  # scraped movies for the image section (two images each)
    pool: int  # distinct JPEGs of each kind (reused across movies)
    batch: int  # movies per Ray Data batch / images per bare-loop call
    texts: int
    world: SyntheticConfig  # ratings for the fused and LightGCN sections
    fused_batch: int
    fused_epochs: int
    fused_steps: int
    lightgcn_epochs: int
    faiss_items: int
    faiss_gpu_queries: int
    faiss_cpu_queries: int


FULL = Sizes(movies=10_000, pool=200, batch=256, texts=50_000, world=SyntheticConfig.preset("ml-1m"),
             fused_batch=512, fused_epochs=4, fused_steps=50, lightgcn_epochs=4, faiss_items=1_000_000,
             faiss_gpu_queries=10_000, faiss_cpu_queries=2_000)
DRY = Sizes(movies=3, pool=2, batch=2, texts=32, world=SyntheticConfig.preset("tiny"), fused_batch=32,
            fused_epochs=2, fused_steps=2, lightgcn_epochs=2, faiss_items=2_000, faiss_gpu_queries=50,
            faiss_cpu_queries=50)


def timed(fn, *args, **kwargs) -> tuple[object, float]:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    started = time.perf_counter()
    out = fn(*args, **kwargs)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return out, time.perf_counter() - started


# --------------------------------------------------------------------------------------------
# 1. images
# --------------------------------------------------------------------------------------------


def jpeg_pool(n: int, seed: int = 0) -> tuple[list[bytes], list[bytes]]:
    """n posters and n thumbnails: the synthetic world's artwork at TMDB / YouTube sizes, with grain."""
    world = SyntheticWorld(SyntheticConfig.preset("ml-100k", seed=seed))
    rng = np.random.default_rng(seed)
    pools: tuple[list[bytes], list[bytes]] = ([], [])
    for m in range(1, n + 1):
        for out, render, size in ((pools[0], world.poster, POSTER), (pools[1], world.thumbnail, THUMBNAIL)):
            image = Image.open(io.BytesIO(render(m))).convert("RGB").resize(size, Image.Resampling.BICUBIC)
            pixels = np.asarray(image, np.float32) + rng.normal(0.0, 6.0, (size[1], size[0], 3))
            buf = io.BytesIO()
            Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=85)
            out.append(buf.getvalue())
    return pools


def write_scrape(root: Path, posters: list[bytes], thumbnails: list[bytes], movies: int) -> None:
    from armor.tmdb.scrape import SCRAPE_SCHEMA, ScrapeStore

    store = ScrapeStore(root / "tmdb")
    for start in range(1, movies + 1, 256):
        ids = range(start, min(start + 256, movies + 1))
        rows = [{"movie_id": m, "tmdb_id": m + 100_000, "status": "ok", "overview": f"movie {m}", "genres": [],
                 "poster": posters[m % len(posters)], "thumbnail": thumbnails[m % len(thumbnails)],
                 "scraped_at": 1000} for m in ids]
        store.write_part(pa.Table.from_pylist(rows, schema=SCRAPE_SCHEMA))


def bare_image_rates(encoder, images: np.ndarray, batch: int) -> tuple[float, float]:
    """(images/s decoding on the encoder's device, images/s decoding with Pillow), same bytes."""
    from armor.features.image import preprocess_batch

    def device_loop() -> None:
        for start in range(0, len(images), batch):
            encoder.encode_images(images[start:start + batch])

    def pillow_loop() -> None:
        for start in range(0, len(images), batch):
            decoded = preprocess_batch({"image": images[start:start + batch]}, columns=("image",))
            encoder(decoded["image_pixels"][decoded["image_status"] == "ok"])

    encoder.encode_images(images[:batch])  # warm-up: cuDNN autotuning, nvJPEG handles
    _, device_s = timed(device_loop)
    _, pillow_s = timed(pillow_loop)
    return len(images) / device_s, len(images) / pillow_s


def job_rate(root: Path, config, name: str, batch: int) -> tuple[float, dict]:
    """Steady-state images/s of the Ray Data encode job, and its summary."""
    from armor.features.store import FeatureStore
    from pipelines.encode import encode

    summary = encode(root, config, features_dir=root / name)
    table = FeatureStore.open(root / name).read(["encoded_at"])
    stamps = np.sort(table["encoded_at"].cast(pa.int64()).to_numpy()) / 1000.0
    first = stamps[min(batch, len(stamps) - 1) - 1]
    span = max(stamps[-1] - first, 1e-3)
    return 2 * (len(stamps) - min(batch, len(stamps) - 1)) / span, summary


def images_section(sizes: Sizes, device: str, weights: str) -> list[str]:
    from armor.config import EncodeConfig
    from armor.features.image import ImageEncoder
    from pipelines.ray_utils import ray_session

    posters, thumbnails = jpeg_pool(sizes.pool)
    images = np.array([p for m in range(1, sizes.movies + 1)
                       for p in (posters[m % sizes.pool], thumbnails[m % sizes.pool])], dtype=object)
    mean_kb = np.mean([len(b) for b in images]) / 1024
    encoder = ImageEncoder("resnet50", weights, device=device, amp_dtype="bf16" if device != "cpu" else "auto")
    device_rate, pillow_rate = bare_image_rates(encoder, images, 2 * sizes.batch)
    del encoder
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    with tempfile.TemporaryDirectory() as tmp, ray_session():
        root = Path(tmp)
        write_scrape(root, posters, thumbnails, sizes.movies)
        base = EncodeConfig(image_backbone="resnet50", image_weights=weights, modalities=("poster", "thumbnail"),
                            device=device, batch_size=sizes.batch, amp_dtype="bf16" if device != "cpu" else "auto")
        job_device, _ = job_rate(root, dataclasses.replace(base, device_decode=True), "features-device", sizes.batch)
        job_pillow, _ = job_rate(root, base, "features-pillow", sizes.batch)
    return [f"images: {len(images):,} JPEGs (mean {mean_kb:.0f} KiB; posters {POSTER[0]}x{POSTER[1]}, thumbnails "
            f"{THUMBNAIL[0]}x{THUMBNAIL[1]}), ResNet-50 ({weights}), {device}",
            f"  bare loop, decode on the device : {device_rate:9,.1f} images/s",
            f"  bare loop, decode with Pillow   : {pillow_rate:9,.1f} images/s",
            f"  Ray Data job, decode on device  : {job_device:9,.1f} images/s  ({job_device / device_rate:.2f} of "
            "its bare loop; target >= 3,000 images/s and >= 0.8)",
            f"  Ray Data job, Pillow CPU tasks  : {job_pillow:9,.1f} images/s  ({job_pillow / pillow_rate:.2f} of "
            "its bare loop)"]


# --------------------------------------------------------------------------------------------
# 2-4. text, fused, LightGCN
# --------------------------------------------------------------------------------------------


def text_section(sizes: Sizes, device: str) -> list[str]:
    from armor.features.text import TextEncoder

    world = SyntheticWorld(SyntheticConfig.preset("ml-100k"))
    distinct = [world.overview(m) for m in range(1, min(sizes.texts, 1_000) + 1)]
    texts = [distinct[i % len(distinct)] for i in range(sizes.texts)]
    encoder = TextEncoder(device=device, batch_size=512 if device != "cpu" else 64)
    encoder(texts[:512])  # warm-up
    _, seconds = timed(encoder, texts)
    return [f"text: all-MiniLM-L6-v2, {len(texts):,} overviews, {device}",
            f"  bare loop: {len(texts) / seconds:9,.1f} sentences/s"]


def ratings(sizes: Sizes):
    from armor.config import SplitConfig
    from armor.data.splits import build_split_data, make_split

    world = SyntheticWorld(sizes.world)
    split = make_split(world.interactions(), SplitConfig(method="random", seed=0))
    return build_split_data(split.tables, split.catalogue).train


def fused_section(sizes: Sizes, device: str, train) -> list[str]:
    from armor.config import FusionConfig, TrainConfig
    from armor.models.content import FusionRecommender
    from armor.training.trainer import Trainer

    n_items = train.shape[1]
    rng = np.random.default_rng(0)
    features = {m: rng.standard_normal((n_items, d)).astype(np.float32)
                for m, d in (("text", 384), ("poster", 2048), ("thumbnail", 2048))}
    config = TrainConfig(batch_size=sizes.fused_batch, epochs=sizes.fused_epochs, steps_per_epoch=sizes.fused_steps)
    model = FusionRecommender(FusionConfig(), config, features, device=device)
    trainer = Trainer(model, train)
    for _ in range(sizes.fused_epochs):
        trainer.run_epoch()
    rates = [r["pairs_per_s"] for r in trainer.history[1:]]
    return [f"fused: full fusion, {train.shape[0]:,} users x {n_items:,} movies, batch {config.batch_size}, "
            f"{sizes.fused_steps} steps/epoch, {device}",
            f"  training: {statistics.median(rates):9,.0f} pairs/s (median of epochs 2-{sizes.fused_epochs})"]


def lightgcn_section(sizes: Sizes, device: str, train) -> list[str]:
    from armor.config import LightGCNConfig
    from armor.models.lightgcn import LightGCN
    from armor.training.trainer import Trainer

    model = LightGCN(LightGCNConfig(dim=64, layers=3, batch_size=2048, epochs=sizes.lightgcn_epochs),
                     device=device, num_threads=None if device != "cpu" else 1)
    trainer = Trainer(model, train)
    for _ in range(sizes.lightgcn_epochs):
        trainer.run_epoch()
    seconds = [r["seconds"] for r in trainer.history[1:]]
    return [f"lightgcn: {train.shape[0]:,} users x {train.shape[1]:,} movies, {train.nnz:,} positives, dim 64, "
            f"3 layers, batch 2048, {device}",
            f"  training: {statistics.median(seconds):9.3f} s/epoch (median of epochs 2-{sizes.lightgcn_epochs})"]


# --------------------------------------------------------------------------------------------
# 5. FAISS
# --------------------------------------------------------------------------------------------


def faiss_section(sizes: Sizes, use_gpu: bool) -> list[str]:
    from armor.retrieval.index import ItemIndex

    rng = np.random.default_rng(0)
    emb = rng.standard_normal((sizes.faiss_items, 128), dtype=np.float32)
    n_queries = max(sizes.faiss_gpu_queries, sizes.faiss_cpu_queries)
    queries = rng.standard_normal((n_queries, 128), dtype=np.float32)
    index = ItemIndex(np.arange(sizes.faiss_items), emb, use_gpu=use_gpu)
    prepared = index._prepare(queries)
    lines = [f"faiss: exact top-100, {sizes.faiss_items:,} x 128 (cosine = inner product of normalised vectors)"]
    _, cpu_s = timed(index._cpu.search, prepared[:sizes.faiss_cpu_queries], 100)
    cpu_rate = sizes.faiss_cpu_queries / cpu_s
    lines.append(f"  CPU index ({sizes.faiss_cpu_queries:,} queries): {cpu_rate:11,.1f} queries/s")
    if index.on_gpu:
        index._index.search(prepared[:100], 100)  # warm-up
        _, gpu_s = timed(index._index.search, prepared[:sizes.faiss_gpu_queries], 100)
        gpu_rate = sizes.faiss_gpu_queries / gpu_s
        lines.append(f"  GPU index ({sizes.faiss_gpu_queries:,} queries): {gpu_rate:11,.1f} queries/s "
                     f"({gpu_rate / cpu_rate:.1f}x the CPU index)")
    else:
        lines.append("  GPU index: not available (this FAISS build has no GPU support, or no GPU): skipped")
    _, search_s = timed(index.search, queries[:sizes.faiss_gpu_queries if index.on_gpu else sizes.faiss_cpu_queries],
                        100)
    searched = sizes.faiss_gpu_queries if index.on_gpu else sizes.faiss_cpu_queries
    lines.append(f"  ItemIndex.search end to end ({'GPU' if index.on_gpu else 'CPU'}): "
                 f"{searched / search_s:11,.1f} queries/s")
    return lines


# --------------------------------------------------------------------------------------------


def resnet_weights() -> str:
    from armor.features.image import resnet50_imagenet_candidates

    return "imagenet" if any(path.is_file() for path, _ in resnet50_imagenet_candidates()) else "none"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="tiny sizes on the CPU, same code paths")
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated sections of {SECTIONS}")
    args = parser.parse_args(argv)
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(only) - set(SECTIONS))
    if unknown:
        parser.error(f"--only: unknown section(s) {unknown}; choose from {', '.join(SECTIONS)}")

    from pipelines.cli import setup_logging

    setup_logging(-1)
    sizes, device = (DRY, "cpu") if args.dry_run else (FULL, "cuda")
    if device == "cuda" and not torch.cuda.is_available():
        # `make bench` runs every benchmark: on a CPU-only machine this one has nothing to measure.
        print("bench_gpu: torch sees no CUDA device, nothing to measure (--dry-run checks the code paths on the CPU)")
        return
    gpu = torch.cuda.get_device_name(0) if device == "cuda" else "none (dry run)"
    print(f"bench_gpu: device {device} ({gpu}), torch {torch.__version__}, "
          f"{len(os.sched_getaffinity(0))} CPU cores{', DRY RUN' if args.dry_run else ''}", flush=True)
    started = time.perf_counter()
    train = ratings(sizes) if {"fused", "lightgcn"} & set(only) else None
    run = {"images": lambda: images_section(sizes, device, resnet_weights() if not args.dry_run else "none"),
           "text": lambda: text_section(sizes, device),
           "fused": lambda: fused_section(sizes, device, train),
           "lightgcn": lambda: lightgcn_section(sizes, device, train),
           "faiss": lambda: faiss_section(sizes, use_gpu=True)}
    for section in only:
        section_started = time.perf_counter()
        lines = run[section]()
        print("\n".join(lines) + f"\n  ({time.perf_counter() - section_started:.1f} s)", flush=True)
    print(f"bench_gpu: done in {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
