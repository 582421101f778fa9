"""A fixture for test modules that train small torch models."""

import pytest
import torch


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Small matmuls: one thread is faster on a shared 2-core machine, and it fixes the summation
    order, so repeated runs agree bit for bit."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
