"""A simulated CUDA device on a CPU-only machine, for the device-discipline tests.

Under PyTorch's fake tensors (``torch._subclasses.fake_tensor.FakeTensorMode``) a tensor has a
shape, a dtype and a device but no values, so ``torch.empty(4, device="cuda")`` exists without a
GPU, and any op that mixes devices raises ``FakeTensorDeviceMismatchError`` exactly where real
CUDA would raise "Expected all tensors to be on the same device". What cannot run: anything that
reads values (``.item()``, ``float(t)``, ``.numpy()``, ``nonzero``, boolean-mask indexing,
``torch.unique``) and kernels without a fake implementation (sparse CSR on CUDA); the tests cover
those parts separately and say so.

``fake_cuda()`` enters the mode and makes the CUDA queries that device-choosing code asks answer
as on a one-GPU machine. It also works around one limitation of the mode: modules built inside it
cannot be moved with ``.to("cuda")``, because ``nn.Module._apply`` swaps fake parameters with
``torch.utils.swap_tensors``, which refuses tensors that have weak references, and the mode's
memo holds one to every fake tensor it made. Dropping the memo just before a swap is harmless
here (it only de-duplicates conversions of real tensors).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from unittest import mock

import torch
from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode

import armor.device

CUDA = torch.device("cuda", 0)
_GIB = 1 << 30


@contextlib.contextmanager
def fake_cuda() -> Iterator[FakeTensorMode]:
    """Run a block with tensors on a simulated ``cuda:0``: cross-device ops raise, values do not exist.

    ``armor.device.cuda_available()`` answers True inside, so ``device="auto"`` picks CUDA.
    """
    mode = FakeTensorMode(allow_non_fake_inputs=True)
    swap = torch.utils.swap_tensors

    def swap_without_memo(t1: torch.Tensor, t2: torch.Tensor) -> None:
        mode.fake_tensor_converter.meta_converter.tensor_memo.clear()
        swap(t1, t2)

    with contextlib.ExitStack() as stack:
        # armor asks through armor.device; patching torch.cuda.is_available itself would make the
        # fake mode try to initialise the (absent) CUDA driver.
        stack.enter_context(mock.patch.object(armor.device, "cuda_available", lambda: True))
        stack.enter_context(mock.patch.object(torch.cuda, "is_bf16_supported", lambda *a, **k: True))
        stack.enter_context(mock.patch.object(torch.cuda, "mem_get_info", lambda *a, **k: (80 * _GIB, 80 * _GIB)))
        stack.enter_context(mock.patch.object(torch.utils, "swap_tensors", swap_without_memo))
        # autocast("cuda") switches itself off when it thinks CUDA is absent.
        stack.enter_context(mock.patch.object(torch.cuda.amp.common, "amp_definitely_not_available", lambda: False))
        # Page-locking host memory has no fake implementation (and no device semantics to check).
        stack.enter_context(mock.patch.object(torch.Tensor, "pin_memory", lambda self, *a, **k: self))
        stack.enter_context(mode)
        yield mode


def on_cuda(*tensors: torch.Tensor) -> bool:
    """True when every tensor is a fake tensor on the simulated CUDA device."""
    return all(isinstance(t, FakeTensor) and t.device.type == "cuda" for t in tensors)


def record_two_rank_gathers(rank: int, backend: str, device: str, init_file: str, workspace: str,
                            out_dir: str) -> None:
    """One rank (of two) of a real process group: one "fused" training step with every
    ``dist.all_gather`` recorded (the devices of its input and outputs). Saves rank{r}.pt in
    ``out_dir`` with the model's device, the records and the loss. ``device`` "cuda" means this
    rank's GPU. Run with ``torch.multiprocessing.spawn``."""
    import torch.distributed as dist

    from armor.config import TrainConfig
    from armor.data.benchmark import load_benchmark
    from armor.models.registry import ModelSettings, build_model
    from armor.training.trainer import Streams

    if device == "cuda":
        torch.cuda.set_device(rank)
        device = f"cuda:{rank}"
    dist.init_process_group(backend, init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        bench = load_benchmark(workspace, "random")
        model = build_model("fused", ModelSettings.of(train=TrainConfig(batch_size=8)), bench.features,
                            bench.present, device=device)
        streams = Streams(0)
        model.begin(bench.data.train, streams, rank=rank, world_size=2)
        seen: list[list[str]] = []
        all_gather = dist.all_gather

        def recording(outputs: list[torch.Tensor], tensor: torch.Tensor, *args: object, **kwargs: object) -> object:
            seen.append([str(tensor.device), *(str(o.device) for o in outputs)])
            return all_gather(outputs, tensor, *args, **kwargs)

        dist.all_gather = recording  # this child process only
        loss = model._pair_step(streams)(next(model._sampler.batches(streams.epoch_rng(0), 1)))
        loss.backward()
        torch.save({"device": str(next(model.module.parameters()).device), "seen": seen, "loss": loss.item()},
                   f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()
