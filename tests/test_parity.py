"""Parity with the official implementations, one test case per fixture file.

Fixtures live in tests/reference (a copy of the shared reference folder);
MMHYBRID_REFERENCE_DIR points the test at another folder. A fixture whose family
is not implemented yet is reported by name as an expected failure.
"""
import importlib.util
import os
from pathlib import Path

import pytest
import torch

from mmhybrid.checkpoints import load_state_dict_checked
from mmhybrid.models.base import registered_families

REFERENCE_DIR = Path(os.environ.get('MMHYBRID_REFERENCE_DIR', Path(__file__).parent / 'reference'))
TOLERANCE = 1e-4  # relative to each map's absmax


def _load_synth_weights():
    spec = importlib.util.spec_from_file_location('synth_weights', REFERENCE_DIR / 'synth_weights.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


FIXTURES = sorted(REFERENCE_DIR.glob('*/*.pt'))


def test_reference_dir_has_fixtures():
    assert FIXTURES, f'no fixtures under {REFERENCE_DIR} (set MMHYBRID_REFERENCE_DIR)'


@pytest.mark.parametrize('path', FIXTURES, ids=[f'{p.parent.name}/{p.stem}' for p in FIXTURES])
def test_official_outputs_are_reproduced(path):
    synth = _load_synth_weights()
    fx = synth.load_fixture(path)
    family = fx['family']
    families = registered_families()
    if family not in families:
        pytest.xfail(f'{fx["case"]}: family {family!r} is not implemented yet')
    backbone = families[family](**fx['project_arch'], drop_path_rate=0.0)
    converted = families[family].converter(synth.synth_state_dict(fx['keys']))
    load_state_dict_checked(backbone, converted, source=fx['case'])  # strict: every weight filled
    backbone.eval()
    with torch.no_grad():
        outs = backbone(fx['input'].float())
    assert len(outs) == len(fx['outputs'])
    diffs = synth.compare(outs, fx['outputs'])
    for level, (diff, ref) in enumerate(zip(diffs, fx['outputs'])):
        assert diff <= TOLERANCE * ref['absmax'], (
            f'{fx["case"]} output {level}: max abs diff {diff:.3g} > {TOLERANCE} * absmax {ref["absmax"]:.3g}')
