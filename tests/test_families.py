"""A family is declared once, on its class; every table that names families is made from the registry
or must cover every registered family. A new family that forgets a declaration, or a table that is
not derived and misses it, fails here."""
import importlib.util
from pathlib import Path

import pytest

import mmhybrid.timm_models as tm
from family_archs import SMALL_ARCH, official_head
from mmhybrid.checkpoints import families
from mmhybrid.registry import MODELS

ROOT = Path(__file__).resolve().parents[1]
FAMILIES = families()
DECLARED = ('family', 'key', 'converter', 'arch_zoo', 'test_arch', 'timm', 'benchmark')


@pytest.mark.parametrize('key', sorted(FAMILIES))
def test_every_family_declares_what_the_tables_are_made_from(key):
    cls = FAMILIES[key]
    assert all(getattr(cls, name, None) for name in DECLARED), [n for n in DECLARED if not getattr(cls, n, None)]
    assert set(cls.timm) >= {'variants', 'first_conv', 'classifier', 'cfg'}
    assert set(cls.benchmark) == {'name', 'cfg', 'official'} and 'arch' in cls.benchmark['cfg']
    MODELS.build(dict(type=f'mmhybrid.{cls.__name__}', arch=cls.test_arch))   # the test arch builds


def _tool(path: str):
    spec = importlib.util.spec_from_file_location(Path(path).stem, ROOT / path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_table_covers_every_registered_family():
    names = {cls.__name__ for cls in FAMILIES.values()}
    assert {f.backbone for f in tm.FAMILIES} == names                        # timm registration
    assert {id(family) for family, _ in tm.VARIANTS.values()} == {id(f) for f in tm.FAMILIES}
    assert set(SMALL_ARCH) == names                                           # the tests' small archs
    from test_configs import FAMILIES as RECIPES
    assert set(RECIPES) == set(FAMILIES)                                      # the configs' recipe rules
    for name in names:                                                        # official classifier keys
        assert official_head(name, MODELS.build(dict(type=f'mmhybrid.{name}', arch=SMALL_ARCH[name])))
    parser = _tool('tools/model_converters/convert.py').parse_args
    for key in FAMILIES:                                                      # convert.py's choices
        assert parser([key, 'in.pth', 'out.pth']).family == key
