"""Official checkpoints: every family's converter on the usual file wrappings, then CrossFormer's own
conversion, loading through init_cfg, the CLI."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mmhybrid.checkpoints import CheckpointMismatchError, families, load_state_dict_checked
from mmhybrid.checkpoints.converters import convert_crossformer
from mmhybrid.models import CrossFormer
from mmhybrid.registry import MODELS

from family_archs import SMALL_ARCH, official_head, official_state

ROOT = Path(__file__).resolve().parents[1]
SMALL = dict(embed_dims=32, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8))


def _official_state(model: CrossFormer) -> dict:
    """What an official classification file holds: backbone keys plus head, final norm and old buffers."""
    state = {k: torch.randn_like(v) for k, v in model.state_dict().items()}
    state['norm.weight'] = torch.ones(256)
    state['norm.bias'] = torch.zeros(256)
    state['head.weight'] = torch.randn(1000, 256)
    state['head.bias'] = torch.zeros(1000)
    state['layers.0.blocks.0.attn.relative_position_index'] = torch.zeros(49, 49, dtype=torch.long)
    state['layers.0.blocks.1.attn.biases'] = torch.zeros(169, 2)
    return state


def test_converter_drops_head_norm_and_index_buffers_and_is_idempotent():
    model = CrossFormer(arch=SMALL)
    official = _official_state(model)
    converted = convert_crossformer({'model': official})
    assert set(converted) == set(model.state_dict())
    assert convert_crossformer(converted).keys() == converted.keys()
    assert all(convert_crossformer(converted)[k] is v for k, v in converted.items())


def test_mismatched_checkpoint_is_refused_naming_the_keys():
    deeper = CrossFormer(arch=dict(SMALL, depths=(2, 2, 4, 2)))
    with pytest.raises(CheckpointMismatchError, match=r'not in model: layers\.2\.blocks\.2\.'):
        load_state_dict_checked(CrossFormer(arch=SMALL), convert_crossformer(deeper.state_dict()))
    wider = CrossFormer(arch=dict(SMALL, embed_dims=64, num_heads=(2, 4, 8, 16)))
    with pytest.raises(CheckpointMismatchError, match=r'shape mismatch: patch_embed\.projs\.0\.weight'):
        load_state_dict_checked(CrossFormer(arch=SMALL), convert_crossformer(wider.state_dict()))


def test_init_cfg_loads_an_official_file_and_a_converted_file_alike(tmp_path):
    source = CrossFormer(arch=SMALL)
    official = tmp_path / 'crossformer-official.pth'
    torch.save({'model': _official_state(source)}, official)
    converted = tmp_path / 'converted.pth'
    subprocess.run([sys.executable, str(ROOT / 'tools/model_converters/convert.py'), 'crossformer',
                    str(official), str(converted)], check=True, capture_output=True)
    x = torch.randn(1, 3, 64, 96)
    outs = []
    for path in (official, converted):
        model = CrossFormer(arch=SMALL, init_cfg=dict(type='Pretrained', checkpoint=str(path)))
        model.init_weights()
        with torch.no_grad():
            outs.append(model.eval()(x))
    for a, b in zip(*outs):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    deprecated = CrossFormer(arch=SMALL, pretrained=str(official))
    deprecated.init_weights()
    torch.testing.assert_close(deprecated.layers[3].blocks[0].attn.qkv.weight,
                               torch.load(official)['model']['layers.3.blocks.0.attn.qkv.weight'])


def test_init_cfg_with_a_checkpoint_of_another_arch_fails_clearly(tmp_path):
    path = tmp_path / 'small.pth'
    torch.save({'model': CrossFormer(arch=SMALL).state_dict()}, path)
    model = CrossFormer(arch=dict(SMALL, embed_dims=64, num_heads=(2, 4, 8, 16)),
                        init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    with pytest.raises(CheckpointMismatchError, match='Check that arch'):
        model.init_weights()
    missing = CrossFormer(arch=SMALL, init_cfg=dict(type='Pretrained', checkpoint=str(tmp_path / 'nope.pth')))
    with pytest.raises(FileNotFoundError, match='nope.pth'):
        missing.init_weights()


# --------------------------------------------------------------------------------------
# Every family's converter (the contract; family files test only their own formats)
# --------------------------------------------------------------------------------------
WRAPPINGS = {
    'raw': lambda sd: sd,
    # the official training scripts: the model under 'model', next to optimizer state and epoch
    'model': lambda sd: {'model': sd, 'optimizer': {}, 'epoch': 299},
    # mmengine / timm files
    'state_dict': lambda sd: {'state_dict': sd, 'meta': {}},
    # saved from DistributedDataParallel without unwrapping
    'ddp': lambda sd: {'model': {f'module.{k}': v for k, v in sd.items()}},
    # a whole mmdet detector: the backbone's keys under 'backbone.', the rest dropped
    'detector': lambda sd: {'state_dict': {**{f'backbone.{k}': v for k, v in sd.items()},
                                           'neck.lateral_convs.0.conv.weight': torch.randn(8, 16, 1, 1)}},
}


@pytest.mark.parametrize('wrap', list(WRAPPINGS))
@pytest.mark.parametrize('family', list(SMALL_ARCH))
def test_converter_reads_raw_training_mmengine_ddp_and_detector_files_alike(family, wrap):
    """The family's converter (as the registry names it) turns an official classification file in each
    wrapping into exactly the backbone's keys, classifier dropped, and the values load strictly."""
    backbone = MODELS.build(dict(type=f'mmhybrid.{family}', arch=SMALL_ARCH[family]))
    convert = families()[type(backbone).key].converter
    official = official_state(family, backbone)
    expected = convert(official)
    assert expected.keys() == backbone.state_dict().keys()
    assert not set(official_head(family, backbone)) & set(expected)
    converted = convert(WRAPPINGS[wrap](official))
    load_state_dict_checked(backbone, converted)
    loaded = backbone.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in expected.items())
