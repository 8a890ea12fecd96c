import os

import pytest
import torch

# `make test` runs one pytest-xdist worker per core: each worker, and each tool it
# starts in a subprocess, then computes on one thread (no oversubscription). A plain
# `pytest` keeps two threads.
if os.environ.get('PYTEST_XDIST_WORKER'):
    os.environ['OMP_NUM_THREADS'] = '1'
    torch.set_num_threads(1)
else:
    torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def stages_that_run():
    """``attach(backbone) -> set``: the indices of the stages whose layers run in later forwards."""
    def attach(backbone) -> set:
        ran = set()
        for k, stage in enumerate(backbone.stage_modules()):
            for m in stage.modules():
                if not list(m.children()):
                    m.register_forward_hook(lambda *_, k=k: ran.add(k))
        return ran
    return attach


def pytest_collection_modifyitems(items):
    """The end-to-end runs (marked ``slow``) first: under ``-n auto`` they then spread over the
    workers from the start instead of leaving one worker running them while the others idle."""
    items.sort(key=lambda item: item.get_closest_marker('slow') is None)
