"""Small architectures of every family, and helpers, for tests that run each shared behaviour over all families."""
import math
import re

import torch
import torch.nn as nn

from mmhybrid.models.base import registered_families

#: registry name -> an ``arch`` small enough for fast CPU tests (every stage and kind of block present): the
#: ``test_arch`` each family declares
SMALL_ARCH = {name: cls.test_arch for name, cls in sorted(
    (cls.__name__, cls) for cls in registered_families().values())}


def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Weights, layer scales, class tokens and BatchNorm statistics far from their initial values
    (layer scales of 1e-6, unit statistics), so that every part of the network shows in the maps."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if not t.is_floating_point():
                continue
            if name.endswith('running_var'):
                t.copy_(0.5 + torch.rand(t.shape, generator=gen))
            elif t.dim() <= 1 or name.endswith('cls_token'):
                t.copy_((1.0 if name.endswith('weight') else 0.0) + 0.1 * torch.randn(t.shape, generator=gen))
            else:
                t.copy_(torch.randn(t.shape, generator=gen) / math.sqrt(t[0].numel()))
    return model


#: families whose module names changed: their earlier mmhybrid layout (the official names) must keep loading
OLD_LAYOUT_FAMILIES = ('Conformer', 'Conv2Former')


def old_layout_state(model: nn.Module) -> dict:
    """``model``'s state dict under the names of the earlier mmhybrid layout, which are the official ones
    (Conv2Former: ``downsample_layers.i``, ``stages.i.j``; Conformer: ``conv_1``, ``trans_patch_conv``,
    ``trans_1``, ``conv_trans_2..depth``). Written out here, apart from the converters' own mapping."""
    family = type(model).__name__
    if family == 'Conv2Former':
        rules = [(r'^stem\.', 'downsample_layers.0.'), (r'^stages\.(\d+)\.downsample\.', r'downsample_layers.\1.'),
                 (r'^stages\.(\d+)\.blocks\.(\d+)\.', r'stages.\1.\2.')]
    elif family == 'Conformer':
        # the fused blocks are numbered 2, 3, ... in forward order, whatever stage holds them
        fused = [(s, j) for s, stage in enumerate(model.stages) for j in range(len(stage.blocks))]
        rules = [(r'^stages\.0\.cnn_block\.', 'conv_1.'), (r'^stages\.0\.patch_embed\.', 'trans_patch_conv.'),
                 (r'^stages\.0\.trans_block\.', 'trans_1.')]
        rules += [(rf'^stages\.{s}\.blocks\.{j}\.', f'conv_trans_{n}.') for n, (s, j) in enumerate(fused, start=2)]
    else:
        raise KeyError(f'{family} has no earlier layout')
    state = {}
    for key, value in model.state_dict().items():
        for pattern, name in rules:
            key, found = re.subn(pattern, name, key)
            if found:
                break
        state[key] = value
    return state

def official_head(family_name: str, backbone, num_classes: int = 1000, seed: int = 0) -> dict:
    """The classifier keys of an official classification checkpoint for ``backbone``, random values."""
    gen = torch.Generator().manual_seed(seed)
    channels = backbone.stage_channels[-1]
    if family_name == 'CvT':
        channels = backbone.stage_channels[backbone.num_official_stages - 1]
    dims = getattr(backbone, 'embed_dims', None)
    shapes = {
        'CrossFormer': {'norm.weight': (channels, ), 'norm.bias': (channels, ),
                        'head.weight': (num_classes, channels), 'head.bias': (num_classes, )},
        'Conv2Former': {'head.0.weight': (1280, channels, 1, 1), 'head.0.bias': (1280, ),
                        'head.2.weight': (1280, ), 'head.2.bias': (1280, ),
                        'pred.weight': (num_classes, 1280), 'pred.bias': (num_classes, )},
        'Conformer': {'trans_norm.weight': (dims, ), 'trans_norm.bias': (dims, ),
                      'trans_cls_head.weight': (num_classes, dims), 'trans_cls_head.bias': (num_classes, ),
                      'conv_cls_head.weight': (num_classes, channels), 'conv_cls_head.bias': (num_classes, )},
        'CvT': {'norm.weight': (channels, ), 'norm.bias': (channels, ),
                'head.weight': (num_classes, channels), 'head.bias': (num_classes, )},
    }
    # CrossFormer++ (the main-branch classifier) and CloFormer: norm + head, as CrossFormer v1
    shapes['CrossFormerPP'] = shapes['CloFormer'] = shapes['CrossFormer']
    shapes = shapes[family_name]
    return {k: torch.randn(s, generator=gen) * (0.1 if k.endswith('bias') else 1.0) for k, s in shapes.items()}


def official_state(family_name: str, backbone, num_classes: int = 1000, seed: int = 0) -> dict:
    """An official-format classification checkpoint for ``backbone``'s architecture, random values."""
    gen = torch.Generator().manual_seed(seed)
    names = old_layout_state(backbone) if family_name in OLD_LAYOUT_FAMILIES else backbone.state_dict()
    state = {k: torch.randn(v.shape, generator=gen) * 0.1 if v.is_floating_point() else v
             for k, v in names.items()}
    state.update({k: v.abs() + 0.5 for k, v in state.items() if k.endswith('running_var')})
    return {**state, **official_head(family_name, backbone, num_classes, seed)}
