"""Shared fixtures of the worker tests."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """The tiny models are too small to gain from threads; on a busy 2-core machine, torch's
    spinning intra-op threads made pipeline tests 10-50x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
