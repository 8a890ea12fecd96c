"""configs/_base_/ only moves settings, it changes none: every config resolves
to exactly the dict it resolved to before the base layer existed.

tests/data/configs_resolved.json holds ``Config.fromfile(path).to_dict()`` of
every config in configs/ and configs/quickstart/, written from the configs as
they were before configs/_base_/ (tuples kept apart from lists). A config
changed on purpose (a new recipe value, a new config) needs the file
rewritten from the current configs:

    .venv/bin/python tests/test_config_bases.py --update
"""
import ast
import functools
import json
import sys
from pathlib import Path

import pytest
from mmengine.config import Config

ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = ROOT / 'configs'
BASE_DIR = CONFIG_DIR / '_base_'
RESOLVED = Path(__file__).resolve().parent / 'data' / 'configs_resolved.json'


def runnable_configs():
    """configs/*.py and configs/quickstart/*.py, relative to configs/."""
    paths = [*CONFIG_DIR.glob('*.py'), *CONFIG_DIR.glob('quickstart/*.py')]
    return sorted(p.relative_to(CONFIG_DIR).as_posix() for p in paths)


def encode(obj):
    """JSON-safe and exact: tuples become {'__tuple__': [...]} so that a tuple
    turned into a list (or back) counts as a change."""
    if isinstance(obj, dict):
        assert all(isinstance(k, str) for k in obj), list(obj)
        return {k: encode(v) for k, v in obj.items()}
    if isinstance(obj, tuple):
        return {'__tuple__': [encode(v) for v in obj]}
    if isinstance(obj, list):
        return [encode(v) for v in obj]
    assert obj is None or isinstance(obj, (str, int, float, bool)), type(obj)
    return obj


def resolve(name):
    return encode(Config.fromfile(str(CONFIG_DIR / name)).to_dict())


def differences(old, new, path=''):
    """Where two encoded configs differ, as 'path: old -> new' lines."""
    if type(old) is not type(new):
        yield f'{path}: {old!r} -> {new!r}'
    elif isinstance(old, dict):
        for k in sorted(set(old) | set(new)):
            if k not in new:
                yield f'{path}.{k}: removed'
            elif k not in old:
                yield f'{path}.{k}: added {new[k]!r}'
            else:
                yield from differences(old[k], new[k], f'{path}.{k}')
    elif isinstance(old, list) and len(old) == len(new):
        for i, (a, b) in enumerate(zip(old, new)):
            yield from differences(a, b, f'{path}[{i}]')
    elif old != new:
        yield f'{path}: {old!r} -> {new!r}'


@functools.lru_cache(maxsize=None)
def load_resolved():
    return json.loads(RESOLVED.read_text())


def write_resolved():
    lines = [f'{json.dumps(name)}: {json.dumps(resolve(name), sort_keys=True)}'
             for name in runnable_configs()]
    RESOLVED.write_text('{\n' + ',\n'.join(lines) + '\n}\n')


def test_every_config_has_a_recorded_resolution():
    """The record covers exactly the runnable configs (none under _base_/)."""
    assert sorted(load_resolved()) == runnable_configs()


@pytest.mark.parametrize('name', runnable_configs())
def test_resolved_configs_are_unchanged_by_the_base_layer(name):
    recorded = load_resolved()
    if name not in recorded:
        pytest.fail(f'{name} is not in {RESOLVED.name}; see this module\'s docstring')
    changed = list(differences(recorded[name], resolve(name)))
    assert not changed, '\n'.join(changed[:30])


def test_resolution_does_not_depend_on_the_working_directory(tmp_path, monkeypatch):
    """Nothing path-like enters a resolved config: the record holds anywhere."""
    name = 'quickstart/upernet_crossformer_toy.py'
    here = resolve(name)
    monkeypatch.chdir(tmp_path)
    assert resolve(name) == here


@pytest.mark.parametrize(
    'path', sorted(p.relative_to(CONFIG_DIR).as_posix() for p in BASE_DIR.rglob('*.py')))
def test_base_files_follow_the_config_rules(path):
    """As every config: `_base_` is the first statement and nothing is
    imported (mmengine 0.10.7 on Python 3.11 would parse the file as a lazy
    config and fail)."""
    tree = ast.parse((CONFIG_DIR / path).read_text())
    first = tree.body[0]
    assert isinstance(first, ast.Assign), ast.dump(first)
    assert [t.id for t in first.targets] == ['_base_']
    assert not any(isinstance(n, (ast.Import, ast.ImportFrom)) for n in ast.walk(tree))


if __name__ == '__main__':
    if sys.argv[1:] != ['--update']:
        sys.exit(__doc__)
    write_resolved()
    print(f'wrote {RESOLVED.relative_to(ROOT)} ({RESOLVED.stat().st_size} bytes)')
