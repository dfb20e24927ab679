"""Model tests run single-threaded: tiny tensors gain nothing from intra-op threads, and on a shared
machine OpenMP threads waiting for a descheduled partner made these tests ~8x slower."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _single_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
