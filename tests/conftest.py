import os

import pytest
import torch

# Deterministic, and the same thread count as the benchmarks quoted in the README.
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
