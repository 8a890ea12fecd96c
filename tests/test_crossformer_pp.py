"""CrossFormer++ behaviour beyond the parity fixtures and the contract suite (test_backbone_base.py):
variants, ACL placement, the main-branch small-map rule and LDA, and telling v1 and ++ checkpoints apart."""
import copy

import pytest
import torch

from mmhybrid.checkpoints import CheckpointMismatchError
from mmhybrid.checkpoints.converters import convert_crossformer, convert_crossformer_pp
from mmhybrid.models import CrossFormer, CrossFormerPP
from mmhybrid.checkpoints import identify_checkpoint
from mmhybrid.models.crossformer import GroupAttention, Grouping, block_groupings

# the custom net of the parity fixtures
CUSTOM = dict(embed_dims=32, depths=(2, 2, 6, 2), num_heads=(1, 2, 4, 8))
# one ACL (stage 1, block 2), LDA with I = 4 and 2 in stages 0-1
SMALL = dict(embed_dims=16, depths=(2, 4, 1, 1), num_heads=(1, 2, 4, 8))


def _meta(cls=CrossFormerPP, **kwargs):
    with torch.device('meta'):   # shapes only; nothing allocated
        return cls(**kwargs)


def _acl_blocks(model):
    return {(s, b) for s, stage in enumerate(model.layers) for b, block in enumerate(stage.blocks)
            if hasattr(block, 'ex_conv')}


@pytest.mark.parametrize('arch,params', [('pp_small', 22_811_316), ('pp_base', 51_224_058),
                                         ('pp_large', 90_974_856), ('pp_huge', 94_935_896),
                                         (CUSTOM, 3_348_198)])
def test_parameter_counts_equal_the_official_dense_backbones(arch, params):
    assert sum(p.numel() for p in _meta(arch=arch).parameters()) == params


def test_aliases_name_the_same_architecture():
    for names, channels in [(('pp_small', 'pp_s', 'small', 's'), [64, 128, 256, 512]),
                            (('pp_base', 'pp_b', 'base', 'b'), [96, 192, 384, 768]),
                            (('pp_large', 'pp_l', 'large', 'L'), [128, 256, 512, 1024]),
                            (('pp_huge', 'pp_h', 'huge', 'h'), [128, 256, 512, 1024])]:
        for name in names:
            assert _meta(arch=name).out_channels == channels, name
    assert [len(s.blocks) for s in _meta(arch='h').layers] == [6, 6, 18, 2]


@pytest.mark.parametrize('arch,blocks', [
    ('pp_small', {(2, b) for b in (2, 5, 8, 11, 14)}),
    ('pp_large', {(2, b) for b in (2, 5, 8, 11, 14)}),
    ('pp_huge', {(0, 2), (1, 2)} | {(2, b) for b in (2, 5, 8, 11, 14)}),   # not block 5 of a 6-block stage
    (CUSTOM, {(2, 2)}),
])
def test_acl_follows_every_third_block_but_the_last(arch, blocks):
    assert _acl_blocks(_meta(arch=arch)) == blocks
    assert _acl_blocks(_meta(arch=arch, use_acl=False)) == set()


def test_acl_replaces_the_block_output_with_layernorm_of_a_depthwise_conv():
    model = CrossFormerPP(arch=SMALL).eval()
    block = model.layers[1].blocks[2]
    x = torch.randn(2, 9, 11, 32)
    grouping = block_groupings(9, 11, 4, 2, 'dilated', 'longer')[1]
    with torch.no_grad():
        without = super(type(block), block).forward(x, grouping)   # CrossFormer's block
        want = block.ex_ln(block.ex_conv(without.permute(0, 3, 1, 2)).permute(0, 2, 3, 1))
        torch.testing.assert_close(block(x, grouping), want)
    assert block.ex_conv.groups == 32 and block.ex_conv.kernel_size == (3, 3) and block.ex_conv.bias is not None


def test_small_maps_do_sda_in_one_square_group_of_the_longer_side():
    sda, lda = block_groupings(10, 14, 14, 1, 'dilated', 'longer')   # the custom fixture's stage 3
    assert sda is lda and sda.group_shape == (14, 14) and sda.padded == (14, 14)
    assert block_groupings(10, 14, 14, 1, 'dilated', 'shorter')[0].group_shape == (10, 10)   # v1's rule
    sda, lda = block_groupings(15, 20, 14, 1, 'dilated', 'longer')   # above G: the usual groups
    assert sda.group_shape == lda.group_shape == (14, 14) and sda.padded == (28, 28)
    lda = block_groupings(56, 56, 4, 4, 'dilated', 'longer')[1]   # ++-S stage 0 at 224
    assert lda.group_shape == (4, 4) and lda.padded == (64, 64)


def test_the_small_map_rule_is_decided_per_call():
    """The official code writes the rule into the block (LDA blocks stay SDA after one small input);
    here a small input before a large one leaves the large input's maps as a fresh model's."""
    model = CrossFormerPP(arch=SMALL).eval()
    fresh = copy.deepcopy(model)
    small, large = torch.randn(1, 3, 32, 32), torch.randn(1, 3, 112, 144)   # stage 1: 4x4 <= G, then 14x18
    with torch.no_grad():
        model(small)
        after = model(large)
        want = fresh(large)
    for a, b in zip(after, want):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize('hw', [(14, 14), (9, 23)])
def test_lda_with_interval_one_is_sda(hw):
    attn = GroupAttention(32, 2).eval()
    x = torch.randn(2, *hw, 32)
    lda, sda = Grouping(*hw, 'dilated', 7, 1), Grouping(*hw, 'sda', 7, 1)
    assert (lda.h, lda.w) == (sda.h, sda.w)
    with torch.no_grad():
        torch.testing.assert_close(attn(x, lda), attn(x, sda), rtol=0, atol=0)


def _official(model) -> dict:
    """An official classification file: the backbone's keys, plus the classifier's norm and head."""
    state = {k: torch.randn_like(v) for k, v in model.state_dict().items()}
    width = state['layers.3.blocks.0.norm1.weight'].numel()
    state.update({'norm.weight': torch.ones(width), 'norm.bias': torch.zeros(width),
                  'head.weight': torch.randn(10, width), 'head.bias': torch.zeros(10)})
    return {'model': state}


def test_converter_reads_classification_and_dense_files_and_is_idempotent():
    model = CrossFormerPP(arch=SMALL)
    official = _official(model)
    converted = convert_crossformer_pp(official)
    assert set(converted) == set(model.state_dict())
    dense = {'state_dict': {f'backbone.{k}': v for k, v in converted.items()}}
    assert convert_crossformer_pp(dense).keys() == converted.keys()
    assert all(convert_crossformer_pp(converted)[k] is v for k, v in converted.items())
    model.load_state_dict(converted)


def test_v1_and_pp_converters_refuse_each_others_files_by_name():
    v1, pp = _official(_meta(CrossFormer, arch='base')), _official(_meta(arch='pp_base'))
    with pytest.raises(CheckpointMismatchError, match=r"CrossFormer \(v1\) checkpoint.*mmhybrid\.CrossFormer'"):
        convert_crossformer_pp(v1)
    with pytest.raises(CheckpointMismatchError, match=r"CrossFormer\+\+ checkpoint.*mmhybrid\.CrossFormerPP'"):
        convert_crossformer(pp)
    # the same widths and depths: only the ACL keys tell them apart
    assert identify_checkpoint(v1)[0] == ('CrossFormer', 'base')
    assert identify_checkpoint(pp)[0] == ('CrossFormerPP', 'pp_base')


def test_loading_the_other_family_through_init_cfg_names_it(tmp_path):
    v1 = CrossFormer(arch=dict(SMALL, depths=(1, 1, 4, 1)))
    torch.save(_official(v1), tmp_path / 'v1.pth')
    pp = CrossFormerPP(arch=dict(SMALL, depths=(1, 1, 4, 1)), init_cfg=dict(type='Pretrained',
                                                                            checkpoint=str(tmp_path / 'v1.pth')))
    with pytest.raises(CheckpointMismatchError, match=r"CrossFormer \(v1\) checkpoint"):
        pp.init_weights()
    torch.save(_official(pp), tmp_path / 'pp.pth')
    v1 = CrossFormer(arch=dict(SMALL, depths=(1, 1, 4, 1)), init_cfg=dict(type='Pretrained',
                                                                          checkpoint=str(tmp_path / 'pp.pth')))
    with pytest.raises(CheckpointMismatchError, match=r'CrossFormer\+\+ checkpoint'):
        v1.init_weights()


def test_a_network_without_acl_loads_files_without_acl(tmp_path):
    source = CrossFormerPP(arch=SMALL, use_acl=False)
    torch.save(_official(source), tmp_path / 'no_acl.pth')
    model = CrossFormerPP(arch=SMALL, use_acl=False, init_cfg=dict(type='Pretrained',
                                                                   checkpoint=str(tmp_path / 'no_acl.pth')))
    model.init_weights()
    loaded = torch.load(tmp_path / 'no_acl.pth')['model']
    assert all(torch.equal(v, loaded[k]) for k, v in model.state_dict().items())
