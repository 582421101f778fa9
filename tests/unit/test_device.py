"""Device discipline without a GPU: every trainable model's training step, the scoring path and the
encoders' forwards run on a simulated CUDA device (``tests.devices.fake_cuda``), where any op that
mixes devices raises ``FakeTensorDeviceMismatchError`` as real CUDA would.

Adding a trainable model: give its class a driver in ``DRIVERS`` (or subclass one that has one);
``test_every_trainable_model_has_a_device_driver`` fails until then.

What fake tensors cannot run, and how it is covered instead:

- values (``.item()``, ``float(loss)``, ``.numpy()``): the trainer's loss logging and the host copies
  of embeddings. The tests stop at the device tensors (``_pair_step``'s loss and gradients,
  ``_encode_tensors``, ``_final_tensors``, ``forward_pixels``, ``TextEncoder.embed``); what follows
  them is one ``.cpu()`` each.
- sparse CSR kernels on CUDA (LightGCN's normalised adjacency): ``torch.sparse_csr_tensor`` is
  replaced by a recorder that checks its parts and its device and returns a dense stand-in of the
  same shape there, so the whole step (propagation, gathers, L2 counts, Adam) runs; the CSR maths
  is tested on the CPU in test_graph_ops.py.
- collectives: a simulated two-rank world whose ``all_gather`` checks that its outputs are on its
  input's device; only the host read of the gathered lengths is stubbed.
- implicit's BPR and ALS train in implicit's own code (CPU, or its own CUDA build): their scoring is
  numpy only, checked by scoring inside the fake mode (a stray torch tensor would be fake there).
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch
import torch.distributed as dist

from armor.config import ArmorGraphConfig, BPRConfig, LightGCNConfig, TrainConfig
from armor.data.benchmark import Benchmark, load_benchmark
from armor.models import graph_ops
from armor.models.als import ALS, ALSConfig
from armor.models.base import TrainableRecommender
from armor.models.bpr import BPR
from armor.models.cold_mapping import KNNMapping, LinearMapping
from armor.models.content import _EncoderModel
from armor.models.freedom import FREEDOM, FREEDOMConfig
from armor.models.graph_hybrid import GraphHybrid
from armor.models.lightgcn import LightGCN
from armor.models.registry import MODELS, ModelSettings, build_model, model_class
from armor.models.vbpr import VBPR, VBPRConfig
from armor.training import triplets
from armor.training.losses import pair_loss
from armor.training.trainer import Streams
from armor.training.triplets import LikedItems
from tests.devices import CUDA, fake_cuda, on_cuda, record_two_rank_gathers
from tests.workspaces import make_workspace

TRAINABLE = [name for name in MODELS if issubclass(model_class(name), TrainableRecommender)]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    return make_workspace(tmp_path_factory.mktemp("device") / "ws", users=60, movies=40, ratings=1300)


@pytest.fixture(scope="module")
def bench(workspace) -> Benchmark:
    return load_benchmark(workspace, "random")


def settings(**train) -> ModelSettings:
    return ModelSettings.of(train=TrainConfig(batch_size=8, **train),
                            lightgcn=LightGCNConfig(dim=8, layers=2, batch_size=64),
                            bpr=BPRConfig(factors=8, iterations=2), als=ALSConfig(factors=8, iterations=2),
                            armor_graph=ArmorGraphConfig(dim=8, fusion_dim=8, heads=2, knn_k=3, reduce_dim=8,
                                                         batch_size=64),
                            vbpr=VBPRConfig(dim=8, batch_size=64), freedom=FREEDOMConfig(dim=8, knn_k=3, batch_size=64))


def build(name: str, bench: Benchmark, device: str = "cuda", **train) -> TrainableRecommender:
    return build_model(name, settings(**train), bench.features, bench.present, device=device)


# ---- one driver per kind of trainable model ---------------------------------------------------
#
# Each runs the model on the simulated CUDA device up to the loss (the autograd engine cannot run a
# backward over fake CUDA tensors without a CUDA driver: it asks the driver for the device's stream
# context), and the whole step (forward, backward, optimiser) on PyTorch's "meta" device, which
# also has no values and also refuses to mix with host tensors ("Tensor on device meta is not on
# the expected device cpu").


def on_meta(*tensors: torch.Tensor) -> bool:
    return all(t.device.type == "meta" for t in tensors)


def drive_pair_model(name: str, bench: Benchmark, monkeypatch, **train) -> None:
    """Content encoders: built on the device; a step samples on the host, encodes, gathers, mines
    and scores there; backward and AdamW keep gradients and state there; the scoring path encodes
    every item there."""
    with fake_cuda():
        model = build(name, bench, **train)
        assert on_cuda(*model.module.parameters(), *model.module.buffers())
        streams = Streams(0)
        model.begin(bench.data.train, streams)
        batch = next(model._sampler.batches(streams.epoch_rng(0), 1))
        assert all(t.device.type == "cpu" for t in batch.values())  # ids arrive on the host
        assert on_cuda(model._pair_step(streams)(batch))
        z, weights = model._encode_tensors()
        assert on_cuda(z, weights) and tuple(weights.shape) == (bench.data.n_items, 3)

    model = build(name, bench, device="meta", **train)
    streams = Streams(0)
    model.begin(bench.data.train, streams)
    loss = model._pair_step(streams)(next(model._sampler.batches(streams.epoch_rng(0), 1)))
    loss.backward()
    grads = [p.grad for p in model.module.parameters() if p.grad is not None]
    assert on_meta(loss) and grads and on_meta(*grads)
    model._optimizer.step()
    state = [v for s in model._optimizer.state.values() for k, v in s.items() if k != "step"]
    assert state and on_meta(*model.module.parameters(), *state)


def drive_lightgcn(name: str, bench: Benchmark, monkeypatch) -> None:
    """LightGCN: the adjacency assembled on the embeddings' device, the BPR loss there, the whole
    step (propagation's custom backward, Adam) there, and the final embeddings there."""
    assembled = []

    def sparse_csr_tensor(indptr, indices, values, size, *, device=None, check_invariants=None):
        device = torch.device(device or indptr.device)
        assert all(t.device.type == device.type for t in (indptr, indices, values)), "CSR parts elsewhere"
        assembled.append((device.type, tuple(size)))
        return torch.zeros(size, device=device)  # dense stand-in: no CUDA (or meta) CSR kernels here

    monkeypatch.setattr(torch, "sparse_csr_tensor", sparse_csr_tensor)
    monkeypatch.setattr(graph_ops, "spmm", lambda adjacency, x: adjacency @ x)
    n_nodes = sum(bench.data.train.shape)
    with fake_cuda():
        model = build(name, bench)
        streams = Streams(0)
        model.begin(bench.data.train, streams)
        assert on_cuda(model._embeddings, model._adjacency)
        assert on_cuda(model._loss(*next(model._batches(streams.numpy))))
        final, layer0 = model._final_tensors()
        assert on_cuda(final, layer0) and tuple(final.shape) == (n_nodes, 8)

    model = build(name, bench, device="meta")
    streams = Streams(0)
    model.begin(bench.data.train, streams)
    loss = model._step(*next(model._batches(streams.numpy)))
    state = [v for s in model._optimizer.state.values() for k, v in s.items() if k != "step"]
    assert on_meta(loss, model._embeddings, model._embeddings.grad, *state)
    assert assembled == [("cuda", (n_nodes, n_nodes)), ("meta", (n_nodes, n_nodes))]


def dense_csr_stand_in(monkeypatch) -> list[tuple[str, tuple[int, ...]]]:
    """``torch.sparse_csr_tensor`` -> a dense tensor of the same shape on the parts' device (no CUDA or
    meta CSR kernels here); returns what was assembled, as (device type, shape)."""
    assembled = []

    def sparse_csr_tensor(indptr, indices, values, size, *, device=None, check_invariants=None):
        device = torch.device(device or indptr.device)
        assert all(t.device.type == device.type for t in (indptr, indices, values)), "CSR parts elsewhere"
        assembled.append((device.type, tuple(size)))
        return torch.zeros(size, device=device)

    monkeypatch.setattr(torch, "sparse_csr_tensor", sparse_csr_tensor)
    monkeypatch.setattr(graph_ops, "spmm", lambda adjacency, x: adjacency @ x)
    return assembled


def drive_graph_hybrid(name: str, bench: Benchmark, monkeypatch) -> None:
    """ARMoR-Graph: its graphs (user-item, content kNN, profiles) assembled on the device, the fusion
    there, the softmax, profile and alignment losses there, the whole step there, the final vectors there."""
    assembled = dense_csr_stand_in(monkeypatch)
    with fake_cuda():
        model = build(name, bench)
        streams = Streams(0)
        model.begin(bench.data.train, streams)
        assert on_cuda(*model._params.parameters(), model._adjacency, model._profiles, *model._item_graph)
        assert on_cuda(*model._loss(*next(model._batches(streams.numpy)), streams.numpy))
        # the sampled softmax and the content ranking term too
        model.config = dataclasses.replace(model.config, sampled_candidates=4, content_rank_weight=1.0)
        assert on_cuda(*model._loss(*next(model._batches(streams.numpy)), streams.numpy))
        users, items, content = model._final_tensors()
        assert on_cuda(users, items, content) and tuple(items.shape) == (bench.data.n_items, 8)

    model = build(name, bench, device="meta")
    streams = Streams(0)
    model.begin(bench.data.train, streams)
    loss = model._loss(*next(model._batches(streams.numpy)), streams.numpy)[0]
    loss.backward()
    model._optimizer.step()
    state = [v for s in model._optimizer.state.values() for k, v in s.items() if k != "step"]
    assert on_meta(loss, *model._params.parameters(), *state)
    assert {device for device, _ in assembled} == {"cuda", "meta"}


def drive_implicit(name: str, bench: Benchmark, monkeypatch) -> None:
    """BPR and ALS train in implicit (no torch); what they hand the evaluator is host numpy."""
    model = build(name, bench)
    model.fit(bench.data.train)  # for real, on the CPU
    users = np.arange(5)
    expected = model.score(users, bench.data.train[users])
    with fake_cuda():
        scores = model.score(users, bench.data.train[users])
    assert isinstance(scores, np.ndarray) and scores.dtype == np.float32
    np.testing.assert_array_equal(scores, expected)


def drive_vbpr(name: str, bench: Benchmark, monkeypatch) -> None:
    """VBPR: its factors, projection and content matrix on the device, the batch's BPR loss (unique-item
    projection, gathers, both L2 terms) there, the whole step there, the final vectors there."""
    with fake_cuda():
        model = build(name, bench)
        streams = Streams(0)
        model.begin(bench.data.train, streams)
        assert on_cuda(*model._params.parameters(), model._content, model._has_id)
        assert on_cuda(model._loss(*next(model._batches(streams.numpy))))
        users, items = model._final_tensors()
        assert on_cuda(users, items) and tuple(items.shape) == (bench.data.n_items, 8 + 64 + 1)

    model = build(name, bench, device="meta")
    streams = Streams(0)
    model.begin(bench.data.train, streams)
    loss = model._loss(*next(model._batches(streams.numpy)))
    loss.backward()
    model._optimizer.step()
    state = [v for s in model._optimizer.state.values() for k, v in s.items() if k != "step"]
    assert on_meta(loss, *model._params.parameters(), *state)


def drive_freedom(name: str, bench: Benchmark, monkeypatch) -> None:
    """FREEDOM: the full and the epoch's pruned user-item graphs and the frozen item graph assembled on
    the device, the features and projections there, the BPR and alignment losses there, the whole step
    there, the final vectors there."""
    assembled = dense_csr_stand_in(monkeypatch)
    with fake_cuda():
        model = build(name, bench)
        streams = Streams(0)
        model.begin(bench.data.train, streams)
        assert on_cuda(*model._params.parameters(), model._full_adjacency, *model._item_graph,
                       *model._modalities.values())
        adjacency = model._pruned_adjacency(streams.numpy)
        assert on_cuda(adjacency, *model._loss(adjacency, *next(model._batches(streams.numpy))))
        users, items = model._final_tensors()
        assert on_cuda(users, items) and tuple(items.shape) == (bench.data.n_items, 8)

    model = build(name, bench, device="meta")
    streams = Streams(0)
    model.begin(bench.data.train, streams)
    adjacency = model._pruned_adjacency(streams.numpy)
    loss = model._loss(adjacency, *next(model._batches(streams.numpy)))[0]
    loss.backward()
    model._optimizer.step()
    state = [v for s in model._optimizer.state.values() for k, v in s.items() if k != "step"]
    assert on_meta(loss, *model._params.parameters(), *state)
    assert {device for device, _ in assembled} == {"cuda", "meta"}


def drive_mapping(name: str, bench: Benchmark, monkeypatch) -> None:
    """The cold-start mappings: with ALS (the default source) training is implicit's and scoring host
    numpy; with LightGCN its step runs on the device as LightGCN's own does. The mapping itself is host
    numpy over the source's host copies (checked by scoring inside the fake mode)."""
    drive_implicit(name, bench, monkeypatch)
    section = next(s for s in MODELS[name].configs if s.endswith("_map"))
    with_lightgcn = settings().replace(section, source="lightgcn")
    assembled = dense_csr_stand_in(monkeypatch)
    with fake_cuda():
        model = build_model(name, with_lightgcn, bench.features, bench.present, device="cuda")
        streams = Streams(0)
        model.begin(bench.data.train, streams)
        source = model._source
        assert isinstance(source, LightGCN) and on_cuda(source._embeddings, source._adjacency)
        assert on_cuda(source._loss(*next(source._batches(streams.numpy))))

    model = build_model(name, with_lightgcn, bench.features, bench.present, device="meta")
    streams = Streams(0)
    model.begin(bench.data.train, streams)
    source = model._source
    loss = source._step(*next(source._batches(streams.numpy)))
    state = [v for s in source._optimizer.state.values() for k, v in s.items() if k != "step"]
    assert on_meta(loss, source._embeddings, source._embeddings.grad, *state)
    assert {device for device, _ in assembled} == {"cuda", "meta"}


DRIVERS: dict[type, Callable[..., None]] = {_EncoderModel: drive_pair_model, LightGCN: drive_lightgcn,
                                            GraphHybrid: drive_graph_hybrid, BPR: drive_implicit, ALS: drive_implicit,
                                            VBPR: drive_vbpr, FREEDOM: drive_freedom, KNNMapping: drive_mapping,
                                            LinearMapping: drive_mapping}


def driver(name: str) -> Callable[..., None]:
    cls = model_class(name)
    found = [d for base, d in DRIVERS.items() if issubclass(cls, base)]
    assert found, f"trainable model {name!r} ({cls.__name__}) has no device driver: add one to DRIVERS"
    return found[0]


def test_every_trainable_model_has_a_device_driver():
    assert {"fused", "fused-paper", "text-projected", "image-projected", "lightgcn", "bpr", "als"} <= set(TRAINABLE)
    for name in TRAINABLE:
        driver(name)


@pytest.mark.parametrize("name", TRAINABLE)
def test_a_training_step_and_the_scoring_path_stay_on_the_model_device(name, bench, monkeypatch):
    driver(name)(name, bench, monkeypatch)


MINING = {"random": {"mining": "random"}, "batch-hard": {"mining": "batch-hard"},
          **{f"semi-hard-{fallback}": {"mining": "semi-hard", "semi_hard_fallback": fallback}
             for fallback in ("easiest", "none", "hardest")},
          "infonce": {"objective": "infonce"}}


@pytest.mark.parametrize("mode", MINING)
def test_every_mining_mode_stays_on_the_model_device(mode, bench, monkeypatch):
    drive_pair_model("fused", bench, monkeypatch, **MINING[mode])


def test_one_way_pair_loss_on_cuda_embeddings_with_host_ids():
    anchors, positives, users = torch.tensor([0, 2, 4]), torch.tensor([1, 3, 5]), torch.tensor([0, 1, 2])
    train = np.zeros((3, 6), np.float32)
    train[users.numpy(), anchors.numpy()] = train[users.numpy(), positives.numpy()] = 1
    liked = LikedItems(sp.csr_matrix(train))
    for config in (TrainConfig(mining="batch-hard"), TrainConfig(mining="random"), TrainConfig(objective="infonce")):
        with fake_cuda():
            za, zp = torch.randn(3, 4, device=CUDA), torch.randn(3, 4, device=CUDA)
            out = pair_loss(za, zp, users, anchors, positives, liked, config, torch.Generator(), symmetric=False)
            assert on_cuda(out.loss, out.negatives, out.found, out.anchor_items, out.candidate_items)


# ---- all-gathers ---------------------------------------------------------------------------------


def test_every_all_gathered_tensor_is_on_the_embeddings_device_in_a_simulated_two_rank_world(monkeypatch):
    """Rank 0 of two: ids arrive on the host, embeddings on CUDA; every tensor an all_gather sees
    (sizes, embeddings and ids) must be on the embeddings' device, as NCCL requires."""
    n = 3
    gathered = []

    def all_gather(outputs, tensor):
        assert all(o.device == tensor.device for o in outputs), "all_gather outputs on another device"
        gathered.append(tensor.device)
        for o in outputs:
            o.copy_(tensor)  # the other rank holds a copy of this one's batch

    monkeypatch.setattr(triplets, "distributed", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda group=None: 2)
    monkeypatch.setattr(dist, "get_rank", lambda group=None: 0)
    monkeypatch.setattr(dist, "all_gather", all_gather)
    monkeypatch.setattr(triplets, "_host_ints", lambda sizes: [n] * sizes.shape[0])  # a host read of values
    anchors, positives, users = torch.tensor([0, 2, 4]), torch.tensor([1, 3, 5]), torch.tensor([0, 1, 2])
    train = np.zeros((3, 6), np.float32)
    train[users.numpy(), anchors.numpy()] = train[users.numpy(), positives.numpy()] = 1
    liked = LikedItems(sp.csr_matrix(train))
    with fake_cuda():
        za = torch.randn(n, 4, device=CUDA, requires_grad=True)
        zp = torch.randn(n, 4, device=CUDA, requires_grad=True)
        out = pair_loss(za, zp, users, anchors, positives, liked, TrainConfig(mining="batch-hard"))
        assert on_cuda(out.loss, out.candidate_items) and out.candidate_items.shape == (4 * n,)
    # sizes + values for z_anchor, z_positive, users, anchors, positives
    assert len(gathered) == 10 and all(d.type == "cuda" for d in gathered)


# ---- encoders --------------------------------------------------------------------------------


@pytest.mark.parametrize("backbone", ["efficientnet-lite0", "resnet50"])
def test_image_encoder_forward_runs_on_cuda_in_bf16_channels_last(backbone):
    from armor.features.image import ImageEncoder

    with fake_cuda():
        encoder = ImageEncoder(backbone, weights="none", device="cuda")
        assert encoder.amp_dtype == torch.bfloat16
        assert on_cuda(*encoder._trunk.parameters())
        seen = {}
        encoder._trunk.register_forward_pre_hook(
            lambda module, args: seen.update(channels_last=args[0].is_contiguous(memory_format=torch.channels_last)))
        encoder._trunk.register_forward_hook(lambda module, args, out: seen.update(dtype=out.dtype))
        x = encoder._upload(torch.zeros(2, 224, 224, 3, dtype=torch.uint8))  # pixels as the decode stage gives them
        assert on_cuda(x)
        features = encoder.forward_pixels(x.permute(0, 3, 1, 2))
        assert on_cuda(features) and features.dtype == torch.float32 and tuple(features.shape) == (2, encoder.dim)
        assert seen == {"channels_last": True, "dtype": torch.bfloat16}


def test_jpeg_decoding_on_the_device_and_encoding_stay_on_cuda(monkeypatch):
    """EncodeConfig.device_decode: JPEGs decoded, resized and cropped on CUDA, Pillow's fallback
    pixels uploaded there, the forward there. nvJPEG itself has no fake kernel: a stand-in returns
    tensors of the decoded shapes on the device it is asked for."""
    from PIL import Image

    from armor.features import jpeg as device_jpeg
    from armor.features.image import ImageEncoder

    def nvjpeg(datas, device):
        sizes = [Image.open(io.BytesIO(d)).size for d in datas]
        return [torch.empty(3, h, w, dtype=torch.uint8, device=device) for w, h in sizes]

    monkeypatch.setattr(device_jpeg, "decode_jpegs", nvjpeg)
    photo = Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 451, 3), dtype=np.uint8))
    jpeg, png = io.BytesIO(), io.BytesIO()
    photo.save(jpeg, "JPEG")
    photo.save(png, "PNG")  # not a JPEG: Pillow decodes it, on the host
    with fake_cuda():
        encoder = ImageEncoder("resnet50", weights="none", device="cuda")
        pixels, status, _ = device_jpeg.decode_batch([jpeg.getvalue(), png.getvalue(), None], encoder.device)
        assert on_cuda(pixels) and status.tolist() == ["ok", "ok", "missing"]
        assert on_cuda(encoder.forward_pixels(pixels))


@pytest.mark.slow
def test_text_encoder_forward_runs_on_cuda():
    from armor.features.text import TextEncoder

    with fake_cuda():
        encoder = TextEncoder(device="cuda")
        vectors = encoder.embed(["a heist in paris", "two friends on a road trip"])
        assert on_cuda(vectors) and vectors.dtype == torch.float32 and tuple(vectors.shape) == (2, encoder.dim)


# ---- FAISS gets host float32 ----------------------------------------------------------------------


def test_faiss_gets_float32_c_contiguous_host_arrays_from_tensors_and_odd_arrays():
    from armor.retrieval.index import ItemIndex

    rng = np.random.default_rng(0)
    emb = rng.standard_normal((50, 8))
    ids = np.arange(100, 150)
    reference = ItemIndex(ids, emb.astype(np.float32))
    for given in (torch.from_numpy(emb), np.asfortranarray(emb), emb[:, ::1].astype(np.float64)):
        index = ItemIndex(torch.from_numpy(ids) if isinstance(given, torch.Tensor) else ids, given)
        assert index.embeddings().dtype == np.float32 and index.embeddings().flags.c_contiguous
        query = torch.from_numpy(emb[:4].T.copy().T)  # a non-contiguous tensor view
        got, scores = index.search(query, 5)
        want, want_scores = reference.search(emb[:4].astype(np.float32), 5)
        np.testing.assert_array_equal(got, want)
        np.testing.assert_allclose(scores, want_scores, rtol=1e-6)


def test_fake_cuda_catches_a_cross_device_op():
    """The harness itself: a host mask against CUDA similarities fails here as it would on a GPU."""
    from torch._subclasses.fake_tensor import FakeTensorDeviceMismatchError

    with fake_cuda():
        sim = torch.zeros(2, 3, device=CUDA)
        with pytest.raises(FakeTensorDeviceMismatchError):
            torch.where(torch.ones(2, 3, dtype=torch.bool), sim, -1.0)


@pytest.mark.slow
def test_two_gloo_ranks_all_gather_every_tensor_on_the_model_device(workspace, tmp_path):
    """Real ranks: each all_gather of a training step (sizes, embeddings, ids) has its input and
    outputs on the model's device. Gloo here is CPU-only, so that device is the CPU; tests/gpu runs
    the same ranks on two GPUs over NCCL, where a host id tensor would fail."""
    import torch.multiprocessing as mp

    mp.spawn(record_two_rank_gathers, args=("gloo", "cpu", str(tmp_path / "init"), str(workspace), str(tmp_path)),
             nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    for result in ranks:
        assert len(result["seen"]) == 10  # sizes + values of z_anchor, z_positive, users, anchors, positives
        assert all(d == result["device"] for record in result["seen"] for d in record)
    assert ranks[0]["loss"] == pytest.approx(ranks[1]["loss"], rel=1e-6)  # one global loss on every rank
