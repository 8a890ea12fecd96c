import functools
import os

import mmengine.config.config as mmengine_config
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




def _memoized_external_lookup(lookup):
    """mmengine resolves every ``mmdet::``/``mmseg::`` base by reading all of the package's ~400
    metafile.yml files (0.1-0.2 s per base, 90% of a ``Config.fromfile``); the answer (a path, or the
    ValueError that sends mmengine to the package's ``_base_`` folder) depends only on the arguments,
    so the test session asks once per base."""
    @functools.lru_cache(maxsize=None)
    def outcome(package_path, cfg_file):
        try:
            return lookup(package_path, cfg_file), None
        except ValueError as err:
            return None, err.args

    def cached(package_path, cfg_file):
        path, error = outcome(package_path, cfg_file)
        if error is not None:
            raise ValueError(*error)
        return path
    return cached


mmengine_config._get_external_cfg_path = _memoized_external_lookup(mmengine_config._get_external_cfg_path)


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
