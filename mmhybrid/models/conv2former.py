"""Conv2Former (Hou et al., TPAMI 2024) as a dense-prediction backbone.

Reads top-down: stem, downsampling, convolutional modulation, MLP, block,
stage, backbone. The modules are laid out as timm's ConvNeXt (``stem``,
``stages.i.downsample``, ``stages.i.blocks.j``); the converter maps the official
names (``downsample_layers.i``, ``stages.i.j``), and files saved by earlier
mmhybrid versions, which kept the official names, load as they are
(``Conv2Former.legacy_key``).

Differences from the official (classification) code that do not change its
results where it runs:

* any input size: an odd map is zero-padded at the bottom/right just before each
  2x2 stride-2 convolution (the stem's last one and the downsampling layers), so
  the outputs are ``ceil(H / stride)``; maps with even sides are not touched;
* the LayerNorms are ``LayerNorm2d`` (the fused kernel on an NHWC view) instead of
  the official mean/variance arithmetic; equal up to float rounding;
* the whole network runs in channels_last memory layout (see ``Conv2Former``);
* inference (eval mode, no autograd, fp32 on CPU) runs each block through oneDNN
  convolutions with fused epilogues (1x1 conv + GELU, depthwise conv * value,
  1x1 conv with the layer scale folded into its weights + residual): fewer passes
  over memory, same results up to float rounding (see ``Conv2FormerBlock``);
* optional output norms (``out_norms``), off by default;
* a checkpoint whose depthwise kernels have another size than ``kernel_size`` is
  refused by naming both sizes.
"""
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn

from ..checkpoints import CheckpointMismatchError
from ..checkpoints.converters.conv2former import CONTAINER_PREFERENCE, convert_conv2former, official_to_layout
from ..registry import MODELS
from .base import HybridBackbone
from .kernels import depthwise_conv, onednn_conv, onednn_conv_binary, onednn_inference
from .layers import DropPath, LayerNorm2d, drop_path_rates, fx_leaf, pad_bottom_right, trunc_normal_init


# --------------------------------------------------------------------------------------
# Stem and downsampling
# --------------------------------------------------------------------------------------
class ConvStem(nn.Sequential):
    """Stride-4 stem: conv3x3 s2 -> GELU -> BN -> conv3x3 -> GELU -> BN -> conv2x2 s2.

    Official indices (0..6) are kept, so the weights are ``stem.{0,2,3,5,6}`` (official
    ``downsample_layers.0.{0,2,3,5,6}``).
    The 3x3 stride-2 conv already gives ``ceil(H / 2)``; an odd map is padded
    before the last conv.

    Args:
        in_channels (int): Image channels.
        out_channels (int): Output width; the convs inside use half of it.
    """

    def __init__(self, in_channels: int, out_channels: int):
        mid = out_channels // 2
        super().__init__(
            nn.Conv2d(in_channels, mid, 3, stride=2, padding=1, bias=False), nn.GELU(), nn.BatchNorm2d(mid),
            nn.Conv2d(mid, mid, 3, stride=1, padding=1, bias=False), nn.GELU(), nn.BatchNorm2d(mid),
            nn.Conv2d(mid, out_channels, 2, stride=2, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        *body, reduce = self
        for layer in body:
            x = layer(x)
        return reduce(pad_bottom_right(x, 2, 2))


class Downsample(nn.Sequential):
    """Between stages: channels-first LayerNorm, then conv2x2 stride 2 (``stages.i.downsample.{0,1}``;
    official ``downsample_layers.i.{0,1}``).

    Odd maps are padded after the norm, so the padding is a zero input of the
    convolution, as a convolution's own zero padding would be.

    Args:
        in_dims (int): Input width.
        out_dims (int): Output width.
    """

    def __init__(self, in_dims: int, out_dims: int):
        super().__init__(LayerNorm2d(in_dims), nn.Conv2d(in_dims, out_dims, 2, stride=2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self[1](pad_bottom_right(self[0](x), 2, 2))


# --------------------------------------------------------------------------------------
# Block
# --------------------------------------------------------------------------------------
class ConvModulation(nn.Module):
    """Convolutional modulation: ``proj(att(x) * v(x))`` on the normalised input.

    ``att`` is 1x1 conv -> GELU -> k x k depthwise conv: a large-kernel "attention"
    map that modulates the value ``v`` by a Hadamard product.

    Args:
        dims (int): Width.
        kernel_size (int): Depthwise kernel k (odd).
    """

    def __init__(self, dims: int, kernel_size: int):
        super().__init__()
        self.norm = LayerNorm2d(dims)
        self.att = nn.Sequential(
            nn.Conv2d(dims, dims, 1), nn.GELU(),
            nn.Conv2d(dims, dims, kernel_size, padding=kernel_size // 2, groups=dims))
        self.v = nn.Conv2d(dims, dims, 1)
        self.proj = nn.Conv2d(dims, dims, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(x)
        fc, act, dwconv = self.att
        return self.proj(depthwise_conv(dwconv, act(fc(x))) * self.v(x))


class ConvMlp(nn.Module):
    """Pre-norm MLP of 1x1 convs with a depthwise 3x3 positional conv: ``y + GELU(pos(y))`` inside.

    Args:
        dims (int): Input and output width.
        mlp_ratio (int): Hidden width / width.
    """

    def __init__(self, dims: int, mlp_ratio: int = 4):
        super().__init__()
        hidden = dims * mlp_ratio
        self.norm = LayerNorm2d(dims)
        self.fc1 = nn.Conv2d(dims, hidden, 1)
        self.pos = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.fc2 = nn.Conv2d(hidden, dims, 1)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.fc1(self.norm(x)))
        # in place on GELU's output, which autograd does not keep (GELU saves its input)
        return self.fc2(self.act(depthwise_conv(self.pos, x)).add_(x))


class Conv2FormerBlock(nn.Module):
    """``x + ls1 * ConvMod(x)``, then ``x + ls2 * MLP(x)``, with per-channel layer scales.

    In training (or whenever autograd records) the block runs as written, the
    layer-scaled residuals as one ``addcmul`` each. For inference on CPU
    (``forward`` under ``torch.no_grad``/``inference_mode`` in eval mode, fp32)
    it runs :meth:`forward_fused`: the same arithmetic with the elementwise
    steps fused into the oneDNN convolutions that produce their inputs.

    Args:
        dims (int): Width.
        kernel_size (int): Depthwise kernel of the modulation.
        mlp_ratio (int): MLP hidden width / width.
        drop_path (float): Stochastic depth rate.
        layer_scale_init (float): Initial layer scale. Default: 1e-6 (official).
    """

    def __init__(self, dims: int, kernel_size: int, mlp_ratio: int = 4, drop_path: float = 0.0,
                 layer_scale_init: float = 1e-6):
        super().__init__()
        self.attn = ConvModulation(dims, kernel_size)
        self.mlp = ConvMlp(dims, mlp_ratio)
        self.layer_scale_1 = nn.Parameter(torch.full((dims, ), layer_scale_init))
        self.layer_scale_2 = nn.Parameter(torch.full((dims, ), layer_scale_init))
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return conv2former_block(self, x)

    def forward_plain(self, x: torch.Tensor) -> torch.Tensor:
        """The block as written (training, autograd, tracing)."""
        if isinstance(self.drop_path, nn.Identity) or not self.training:
            x = torch.addcmul(x, self.layer_scale_1[:, None, None], self.attn(x))
            return torch.addcmul(x, self.layer_scale_2[:, None, None], self.mlp(x))
        x = x + self.drop_path(self.layer_scale_1[:, None, None] * self.attn(x))
        return x + self.drop_path(self.layer_scale_2[:, None, None] * self.mlp(x))

    def forward_fused(self, x: torch.Tensor) -> torch.Tensor:
        """Inference forward with oneDNN fused epilogues (no autograd; eval semantics).

        Five passes over memory fewer per block than :meth:`forward`: GELU runs
        inside the 1x1 convs that feed it, the modulation product inside the
        depthwise conv, and each layer-scaled residual inside the last 1x1 conv
        (the per-channel scale folded into its weights and bias).
        """
        x = x.contiguous(memory_format=torch.channels_last)
        attn, mlp = self.attn, self.mlp
        y = attn.norm(x)
        value = onednn_conv(y, attn.v)
        att = onednn_conv(y, attn.att[0], 'gelu')
        y = onednn_conv_binary(att, value, attn.att[2], 'mul')
        ls = self.layer_scale_1
        x = onednn_conv_binary(y, x, attn.proj, 'add', attn.proj.weight * ls[:, None, None, None], attn.proj.bias * ls)
        y = onednn_conv(mlp.norm(x), mlp.fc1, 'gelu')
        y = onednn_conv(y, mlp.pos, 'gelu').add_(y)
        ls = self.layer_scale_2
        return onednn_conv_binary(y, x, mlp.fc2, 'add', mlp.fc2.weight * ls[:, None, None, None], mlp.fc2.bias * ls)


@fx_leaf
def conv2former_block(block: Conv2FormerBlock, x: torch.Tensor) -> torch.Tensor:
    """``block(x)``: :meth:`~Conv2FormerBlock.forward_fused` where ``onednn_inference`` allows it,
    else :meth:`~Conv2FormerBlock.forward_plain`.

    A leaf of FX graphs, so that a traced model decides per call, as the eager one
    (equal outputs bit for bit, with and without autograd).
    """
    if not block.training and onednn_inference(x, *block.modules()):
        return block.forward_fused(x)
    return block.forward_plain(x)


class Conv2FormerStage(nn.Module):
    """One stage: the downsampling layer that starts it (none in stage 0, which follows the stem),
    then its blocks. A container: the backbone runs its parts, so that ``with_cp`` applies per block.

    Args:
        in_dims (int, optional): Width of the previous stage; None for stage 0 (no downsampling).
        dims (int): Width of the stage.
        kernel_size (int): Depthwise kernel of the modulation.
        mlp_ratio (int): MLP hidden width / width.
        drop_paths (Sequence[float]): Stochastic depth of each block (one block per entry).
    """

    def __init__(self, in_dims: Optional[int], dims: int, kernel_size: int, mlp_ratio: int,
                 drop_paths: Sequence[float]):
        super().__init__()
        self.downsample = Downsample(in_dims, dims) if in_dims is not None else None
        self.blocks = nn.Sequential(*(Conv2FormerBlock(dims, kernel_size, mlp_ratio, rate) for rate in drop_paths))


# --------------------------------------------------------------------------------------
# Kernel size of a checkpoint
# --------------------------------------------------------------------------------------
_KERNEL_KEY = 'attn.att.2.weight'


def checkpoint_kernel_sizes(state, prefix: str = '') -> List[int]:
    """The depthwise kernel sizes of the modulation branches in a converted state dict."""
    return sorted({v.shape[-1] for k, v in state.items()
                   if k.startswith(prefix + 'stages.') and k.endswith(_KERNEL_KEY) and v.dim() == 4})


def _kernel_size_problem(model: 'Conv2Former', state, prefix: str = '',
                         source: str = 'the checkpoint') -> str:
    """A message naming both kernel sizes when ``state`` has other kernels than ``model``; '' if none."""
    found = [k for k in checkpoint_kernel_sizes(state, prefix) if k != model.kernel_size]
    if not found:
        return ''
    sizes = ', '.join(f'{k}x{k}' for k in found)
    return (f'{source} has {sizes} depthwise kernels in its modulation branches '
            f'(stages.*.blocks.*.{_KERNEL_KEY}), '
            f'but this Conv2Former ({model.arch_name}) is built with kernel_size={model.kernel_size} '
            f'({model.kernel_size}x{model.kernel_size}). Build the backbone with kernel_size={found[0]} '
            'to load it (the official code builds N and the ImageNet-22k B model with 7, '
            'the others with 11).')


def _refuse_other_kernel_size(module, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs) -> None:
    """load_state_dict pre-hook: the kernel-size message comes first in any loader's errors."""
    problem = _kernel_size_problem(module, state_dict, prefix)
    if problem:
        error_msgs.append(problem)


# --------------------------------------------------------------------------------------
# Backbone
# --------------------------------------------------------------------------------------
@MODELS.register_module()
class Conv2Former(HybridBackbone):
    """Conv2Former backbone returning multi-scale NCHW maps (strides 4, 8, 16, 32).

    The stage maps are the official ones: each stage's output before the next
    downsampling layer.

    Layout (timm's ConvNeXt; the official names in brackets):

    * ``stem``: the stride-4 convolutional stem (``downsample_layers.0``);
    * ``stages.i``: one :class:`Conv2FormerStage` per output stage, with
      ``stages.i.downsample`` (``downsample_layers.i``; None in stage 0) and the
      blocks ``stages.i.blocks.j`` (``stages.i.j``);
    * ``out_norms.i``: the optional output norms (not in the official network).

    The network runs in channels_last memory layout: on CPU the LayerNorms then
    need no copies and the MLP's depthwise 3x3 conv is many times faster than in
    NCHW, so the whole forward is faster; the returned maps are ordinary contiguous
    NCHW tensors.

    Args:
        arch (str | dict): 'nano', 'tiny', 'small', 'base', 'large' (or 'n', 't', 's',
            'b', 'l'), or a dict with ``embed_dims`` (an int D for widths D*2^i, or one
            width per stage) and ``depths``, optionally ``kernel_size`` (default 11)
            and ``mlp_ratio`` (default 4).
        kernel_size (int, optional): Depthwise kernel of the modulation, odd;
            overrides the arch's (nano 7, the others 11).
        drop_path_rate (float): Stochastic depth, linear over all blocks. Default: 0.2.
        out_norms (bool): Add a channels-first LayerNorm on every returned map, as
            ConvNeXt's dense backbones do (named ``out_norms.i``, apart from the
            official keys; new, not in the ImageNet files). Default: False, so the
            default backbone is exactly the official network and every weight
            comes from the official file; the dense configs switch them on.
        frozen_stages (int): -1 none, 0 the stem (with its BatchNorms), k the stem
            and stages 0..k-1 (stage i >= 1 includes its downsampling layer).
            Default: -1.
        norm_eval (bool): Keep the stem's BatchNorms in eval mode while training.
            Default: False.
        **kwargs: The arguments of every family (``in_channels``, ``out_indices``, ``init_cfg``, ...): see
            :class:`~mmhybrid.models.base.HybridBackbone`.
    """

    family = 'Conv2Former'
    key = 'conv2former'
    converter = staticmethod(convert_conv2former)
    arch_zoo = {
        'nano': dict(embed_dims=(64, 128, 256, 512), depths=(2, 2, 8, 2), kernel_size=7),
        'tiny': dict(embed_dims=(72, 144, 288, 576), depths=(3, 3, 12, 3), kernel_size=11),
        'small': dict(embed_dims=(72, 144, 288, 576), depths=(4, 4, 32, 4), kernel_size=11),
        'base': dict(embed_dims=(96, 192, 384, 768), depths=(4, 4, 34, 4), kernel_size=11),
        'large': dict(embed_dims=(128, 256, 512, 1024), depths=(4, 4, 48, 4), kernel_size=11),
    }
    arch_aliases = {'n': 'nano', 't': 'tiny', 's': 'small', 'b': 'base', 'l': 'large'}
    arch_required = ('embed_dims', 'depths')
    #: how the family appears in timm (see CrossFormer.timm)
    timm = dict(
        variants={'conv2former_n': 'nano', 'conv2former_t': 'tiny', 'conv2former_s': 'small', 'conv2former_b': 'base',
                  'conv2former_b_22k': dict(arch='base', kernel_size=7), 'conv2former_l': 'large'},
        first_conv=('stem.0', ),
        # official models/conv2former.py: head = [1x1 conv to 1280, GELU, channels-first
        # LayerNorm(eps 1e-6)] on the map -> mean over H, W -> pred (Linear)
        classifier=('pool', dict(hidden_dims=1280, norm_eps=1e-6), {'head.0': 'conv', 'head.2': 'norm', 'pred': 'fc'}),
        containers=CONTAINER_PREFERENCE,
        params={'conv2former_n': 15.0, 'conv2former_t': 26.7, 'conv2former_s': 50.0, 'conv2former_b': 90.0,
                'conv2former_l': 198.9},
        # trained with timm's train.py and the official models' default_cfg, which is
        # timm's vision_transformer._cfg(): mean/std 0.5, crop 0.9, bicubic
        cfg=dict(crop_pct=0.9, interpolation='bicubic', mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
                 paper_ids='arXiv:2211.11943', origin_url='https://github.com/HVision-NKU/Conv2Former'))
    #: the size the GPU check and the benchmarks time (see CrossFormer.benchmark)
    benchmark = dict(name='Conv2Former-T', cfg=dict(arch='tiny', out_norms=True), official='official/conv2former_t')
    #: a small arch for fast CPU checks (tests, ``preflight.py --tiny``)
    test_arch = dict(embed_dims=(16, 32, 48, 64), depths=(1, 1, 1, 1), kernel_size=5)

    def __init__(self,
                 arch: Union[str, dict] = 'tiny',
                 kernel_size: Optional[int] = None,
                 drop_path_rate: float = 0.2,
                 **kwargs):
        # the argument (None: the arch's); build replaces it with the kernel size in use
        self.kernel_size = kernel_size
        self.drop_path_rate = drop_path_rate
        super().__init__(arch=arch, **kwargs)
        self.register_load_state_dict_pre_hook(_refuse_other_kernel_size)

    def build(self, spec: dict) -> Tuple[Tuple[int, ...], List[int]]:
        """``stem`` and ``stages`` from the arch; widths as given (or ``D * 2^i``), strides ``4 * 2^i``."""
        depths = tuple(spec['depths'])
        dims = spec['embed_dims']
        dims = tuple(dims * 2**i for i in range(len(depths))) if isinstance(dims, int) else tuple(dims)
        if len(dims) != len(depths):
            raise ValueError(f'embed_dims {dims} and depths {depths} differ in length.')
        self.kernel_size = self.kernel_size if self.kernel_size is not None else spec.get('kernel_size', 11)
        if not isinstance(self.kernel_size, int) or self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ValueError(f'kernel_size must be a positive odd int, got {self.kernel_size!r}.')
        mlp_ratio = spec.get('mlp_ratio', 4)

        self.stem = ConvStem(self.in_channels, dims[0])
        self.stages = nn.ModuleList(
            Conv2FormerStage(dims[i - 1] if i else None, dims[i], self.kernel_size, mlp_ratio, rates)
            for i, rates in enumerate(drop_path_rates(self.drop_path_rate, depths)))
        return dims, [4 * 2**i for i in range(len(dims))]

    def stem_modules(self) -> List[nn.Module]:
        return [self.stem]

    def stage_modules(self) -> List[nn.Module]:
        return list(self.stages)

    def legacy_key(self, key: str) -> Optional[str]:
        """Earlier mmhybrid versions kept the official names (``downsample_layers.i``, ``stages.i.j``)."""
        new = official_to_layout(key)
        return new if new != key else None

    def _default_init(self) -> None:
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                trunc_normal_init(m)
            elif isinstance(m, (nn.LayerNorm, nn.BatchNorm2d)):
                m.reset_parameters()
            elif isinstance(m, Conv2FormerBlock):
                nn.init.constant_(m.layer_scale_1, 1e-6)
                nn.init.constant_(m.layer_scale_2, 1e-6)

    def layer_decay_id(self, name: str, num_layers: int, decay_type: str = 'layer_wise') -> int:
        """ConvNeXt's layer ids for learning-rate decay (its dense recipes, which Conv2Former follows).

        'stage_wise' (ConvNeXt's UperNet): every downsampling layer and the stem
        0, stage i's blocks i + 1.
        'layer_wise' (ConvNeXt's detectors): stem 0, stage 0 1, stage 1 (its
        downsampling and blocks) 2, stage 2's downsampling 3 and its blocks spread evenly
        over ids 3..num_layers-1 (ConvNeXt's ``3 + j // 3`` is this spread for
        its 9 and 27 blocks with num_layers 6 and 12), stage 3 and its
        downsampling ``num_layers``. The output norms are new layers, not in the
        ImageNet weights: they learn at the heads' rate (id ``num_layers + 1``),
        as ConvNeXt's ``norm0..3``.

        Args:
            name: parameter name inside the backbone.
            num_layers: number of layer ids above the stem (ConvNeXt-T: 6).
            decay_type: 'layer_wise' or 'stage_wise'.
        """
        parts = name.split('.')
        if len(self.stages) != 4 or num_layers < 4:
            raise ValueError(f'Conv2Former layer-wise lr decay needs 4 stages and num_layers >= 4, '
                             f'got {len(self.stages)} stages and num_layers={num_layers}.')
        if parts[0] == 'out_norms':
            return num_layers + 1
        if parts[0] == 'stem':   # the official downsample_layers.0
            kind, stage = 'downsample', 0
        elif parts[0] == 'stages' and len(parts) > 3 and parts[2] in ('downsample', 'blocks'):
            kind, stage = parts[2], int(parts[1])
        else:
            raise ValueError(f'No layer id for Conv2Former parameter {name!r}.')
        if decay_type == 'stage_wise':
            return 0 if kind == 'downsample' else stage + 1
        if kind == 'downsample':
            return (0, 2, 3, num_layers)[stage]
        if stage == 2:
            return 3 + int(parts[3]) * (num_layers - 3) // len(self.stages[2].blocks)
        return (1, 2, num_layers - 1, num_layers)[stage]

    def adapt_pretrained(self, state: dict, source: str) -> dict:
        """Refuse other kernel sizes by name; with ``out_norms``, keep the new norms' initial values.

        The output norms are not in ImageNet files: a file without them leaves them
        at their initial values; a dense checkpoint that has them loads them.
        """
        problem = _kernel_size_problem(self, state, source=source)
        if problem:
            raise CheckpointMismatchError(problem)
        return self.keep_new_weights(state, 'out_norms.', 'the output norms', source)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """``(B, C, H, W)`` -> maps of ``ceil(H / s) x ceil(W / s)`` for the stages in ``out_indices``."""
        self.check_input(x)
        x = self.stem(x.contiguous(memory_format=torch.channels_last))
        outs = []
        for i in range(self.out_indices[-1] + 1):  # later stages would be computed for nothing
            stage = self.stages[i]
            if stage.downsample is not None:
                x = stage.downsample(x)
            for block in stage.blocks:
                x = self.run_block(block, x)
            if i in self.out_indices:
                outs.append(x.contiguous())
        return self.finish_outputs(outs)
