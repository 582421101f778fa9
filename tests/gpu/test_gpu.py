"""Real GPU checks: the encoders, device JPEG decoding (nvJPEG), every trainable model for a few
steps in one worker, FAISS's GPU index, and two ranks gathering over NCCL.

Skipped, each with its reason, where torch sees no CUDA device (and the FAISS test where FAISS
has no GPU support, the NCCL one with fewer than two GPUs). The CPU suite checks the same device
discipline on a simulated device (tests/unit/test_device.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from armor.config import BPRConfig, LightGCNConfig, TrainConfig
from armor.data.benchmark import Benchmark, load_benchmark
from armor.models.als import ALSConfig
from armor.models.base import TrainableRecommender
from armor.models.registry import MODELS, ModelSettings, build_model, model_class
from armor.training.trainer import Trainer
from tests.workspaces import make_workspace

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(),
                                 reason="needs a CUDA device: torch.cuda.is_available() is False on this machine")]

TRAINABLE = [name for name in MODELS if issubclass(model_class(name), TrainableRecommender)]


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    return make_workspace(tmp_path_factory.mktemp("gpu") / "ws", users=120, movies=80, ratings=2700)


@pytest.fixture(scope="module")
def bench(workspace) -> Benchmark:
    return load_benchmark(workspace, "random")


# ---- encoders ----------------------------------------------------------------------------------


@pytest.mark.parametrize("backbone", ["efficientnet-lite0", "resnet50"])
def test_image_encoder_on_cuda_agrees_with_cpu(backbone):
    from PIL import Image
    from skimage import data as skdata

    from armor.features.image import ImageEncoder, preprocess_batch
    from tests.unit.test_jpeg_decode import encode

    photos = [skdata.chelsea(), skdata.coffee(), skdata.astronaut(), skdata.rocket()]
    column = np.array([encode(Image.fromarray(p)) for p in photos], dtype=object)
    pixels = preprocess_batch({"image": column}, columns=("image",))["image_pixels"]
    weights = "imagenet" if backbone == "efficientnet-lite0" else "none"
    gpu = ImageEncoder(backbone, weights, device="cuda")
    cpu = ImageEncoder(backbone, weights, device="cpu")
    assert gpu.amp_dtype in (torch.bfloat16, torch.float16)
    on_gpu, on_cpu = gpu(pixels), cpu(pixels)
    assert on_gpu.dtype == np.float32 and on_gpu.shape == (4, gpu.dim)
    assert cosine_rows(on_gpu, on_cpu).min() > 0.99  # bf16 autocast against fp32


def test_device_jpeg_decoding_on_cuda_matches_pillow():
    from armor.features import jpeg as device_jpeg
    from armor.features.image import ImageEncoder, preprocess_batch
    from tests.unit.test_jpeg_decode import sample_values

    column = np.array(list(sample_values().values()), dtype=object)
    reference = preprocess_batch({"image": column}, columns=("image",))
    pixels, status, _ = device_jpeg.decode_batch(column, torch.device("cuda"))
    assert pixels.device.type == "cuda"
    assert status.tolist() == reference["image_status"].tolist()
    diff = np.abs(pixels.permute(0, 2, 3, 1).cpu().numpy().astype(int) - reference["image_pixels"].astype(int))
    assert diff.mean() < 0.5 and diff.max() <= 16  # nvJPEG's IDCT differs from libjpeg-turbo's in low bits
    encoder = ImageEncoder("efficientnet-lite0", device="cuda")
    features, status, _ = encoder.encode_images(column)
    ok = status == "ok"
    expected = encoder(reference["image_pixels"][ok])
    assert cosine_rows(features[ok], expected).min() > 0.99


def test_text_encoder_on_cuda_agrees_with_cpu():
    from armor.features.text import TextEncoder

    texts = ["a heist in paris goes wrong", "two friends on a road trip", "a robot learns to love", ""]
    gpu, cpu = TextEncoder(device="cuda"), TextEncoder(device="cpu")
    assert gpu.embed(texts[:2]).device.type == "cuda"
    assert cosine_rows(gpu(texts[:3]), cpu(texts[:3])).min() > 0.999


# ---- every trainable model, a few steps in one worker ----------------------------------------


@pytest.mark.parametrize("name", TRAINABLE)
def test_every_trainable_model_trains_a_few_steps_on_cuda(name, bench):
    settings = ModelSettings.of(train=TrainConfig(batch_size=32, epochs=2, steps_per_epoch=3),
                                lightgcn=LightGCNConfig(dim=16, layers=2, batch_size=256, epochs=2),
                                bpr=BPRConfig(factors=16, iterations=4), als=ALSConfig(factors=16, iterations=2))
    model = build_model(name, settings, bench.features, bench.present, device="cuda")
    trainer = Trainer(model, bench.data.train, bench.data)
    records = [trainer.run_epoch() for _ in range(2)]
    assert all(np.isfinite(v) for r in records for v in r.values())
    tensors = [getattr(model, "module", None), getattr(model, "_embeddings", None)]
    for held in tensors:
        if isinstance(held, torch.nn.Module):
            assert all(p.device.type == "cuda" for p in held.parameters())
        elif isinstance(held, torch.Tensor):
            assert held.device.type == "cuda"
    model = trainer.finish()
    users = np.arange(10)
    scores = model.score(users, bench.data.train[users])
    assert scores.shape == (10, bench.data.n_items) and np.isfinite(scores).all()


# ---- FAISS ---------------------------------------------------------------------------------------


def test_faiss_gpu_index_returns_the_exact_cpu_answer():
    from armor.retrieval.index import ItemIndex, gpu_available

    if not gpu_available():
        pytest.skip("this FAISS build has no GPU support (faiss-cpu): install faiss-gpu to check the GPU index")
    rng = np.random.default_rng(0)
    emb = rng.standard_normal((20_000, 64)).astype(np.float32)
    ids = np.arange(20_000) + 1
    queries = torch.from_numpy(rng.standard_normal((200, 64)).astype(np.float32)).cuda()  # a device tensor
    gpu, cpu = ItemIndex(ids, emb, use_gpu=True), ItemIndex(ids, emb)
    assert gpu.on_gpu
    got, got_scores = gpu.search(queries, 100)
    want, want_scores = cpu.search(queries.cpu().numpy(), 100)
    np.testing.assert_allclose(got_scores, want_scores, atol=1e-4)
    assert (got == want).mean() > 0.999  # float ties in the last bit may swap neighbours


# ---- two ranks over NCCL -----------------------------------------------------------------------


def test_two_nccl_ranks_all_gather_every_tensor_on_their_gpu(workspace, tmp_path):
    import torch.multiprocessing as mp

    from tests.devices import record_two_rank_gathers

    if torch.cuda.device_count() < 2:
        pytest.skip(f"NCCL needs a GPU per rank: {torch.cuda.device_count()} visible")
    mp.spawn(record_two_rank_gathers, args=("nccl", "cuda", str(tmp_path / "init"), str(workspace), str(tmp_path)),
             nprocs=2, join=True)
    for rank in range(2):
        result = torch.load(tmp_path / f"rank{rank}.pt")
        assert result["device"] == f"cuda:{rank}" and len(result["seen"]) == 10
        assert all(d == result["device"] for record in result["seen"] for d in record)
