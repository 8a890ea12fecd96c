"""CrossFormer++ (Wang et al., 2023) as a dense-prediction backbone.

CrossFormer (crossformer.py) as the official main-branch code builds it for the
++ results; every piece is CrossFormer's, and what differs is said here:

* LDA takes G x G groups with step I inside (G*I) x (G*I) tiles (CrossFormer's
  ``lda='dilated'``), not the v1 dense backbone's I x I sub-grids of the map;
* small maps: when ``min(H, W) <= G`` every block of the stage does SDA with one
  square group of side ``max(H, W)`` (``small_maps='longer'``), decided per call
  (the official code writes it into the block);
* per-stage group sizes (progressive group sizes, default G = 4, 4, 14, 7 and
  I = 4, 2, 1, 1: the ImageNet configs');
* activation cooling layers (ACL): block i of a stage with ``(i + 1) % 3 == 0``
  and ``i < depth - 1`` ends with ``x <- LayerNorm(depthwise 3x3 conv(x))``, no
  residual.

As for CrossFormer, any input size works (outputs ``ceil(H / stride)``); the
official code runs only for sides that are multiples of 32, where both agree.
"""
from typing import Dict, Sequence, Union

import torch
import torch.nn as nn

from ..checkpoints import CheckpointLoadError, CheckpointMismatchError
from ..checkpoints.converters.crossformer_pp import convert_crossformer_pp
from ..registry import MODELS
from .crossformer import CrossFormerBlock, CrossFormerNetwork, Grouping
from .kernels import depthwise_conv


def has_acl(index: int, depth: int) -> bool:
    """Whether block ``index`` of a stage of ``depth`` blocks ends with an activation cooling layer."""
    return (index + 1) % 3 == 0 and index < depth - 1


class CrossFormerPPBlock(CrossFormerBlock):
    """CrossFormer's block, optionally followed by an activation cooling layer.

    Args:
        dims (int): Token width.
        num_heads (int): Number of heads.
        mlp_ratio (float): MLP hidden width / token width.
        drop_path (float): Stochastic depth rate.
        acl (bool): End with ``x <- ex_ln(ex_conv(x))``: a depthwise 3x3 convolution
            (with bias) and a LayerNorm, replacing ``x`` (no residual).
    """

    def __init__(self, dims: int, num_heads: int, mlp_ratio: float = 4.0, drop_path: float = 0.0,
                 acl: bool = False):
        super().__init__(dims, num_heads, mlp_ratio, drop_path)
        self.acl = acl
        if acl:
            self.ex_conv = nn.Conv2d(dims, dims, 3, padding=1, groups=dims)
            self.ex_ln = nn.LayerNorm(dims)

    def forward(self, x: torch.Tensor, grouping: Grouping) -> torch.Tensor:
        x = super().forward(x, grouping)
        if self.acl:  # on the H x W map, zero-padded by the convolution only
            x = self.ex_ln(depthwise_conv(self.ex_conv, x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1))
        return x


@MODELS.register_module()
class CrossFormerPP(CrossFormerNetwork):
    """CrossFormer++ backbone returning multi-scale NCHW maps (strides 4, 8, 16, 32).

    CrossFormer's network (:class:`~mmhybrid.models.crossformer.CrossFormerNetwork`: the same
    construction, network walk and random init; the ACL convolutions keep PyTorch's default
    init, as in the official code) with the main-branch LDA and small-map rule and
    :class:`CrossFormerPPBlock` blocks. A family of its own: not a :class:`CrossFormer`.

    Args:
        arch (str | dict): 'pp_small', 'pp_base', 'pp_large', 'pp_huge' (or 'pp_s',
            'pp_b', 'pp_l', 'pp_h', 'small', 's', ...), or a dict with ``embed_dims``,
            ``depths``, ``num_heads``.
        group_size (int | Sequence[int]): Group size G per stage. Default: (4, 4, 14, 7),
            the ImageNet models'; the official COCO/ADE20K configs use 7.
        interval (int | Sequence[int]): LDA interval I per stage. Default: (4, 2, 1, 1);
            the official COCO/ADE20K configs use (8, 4, 2, 1).
        use_acl (bool): Activation cooling layers (every official ++ network has
            them). Default: True.
        mlp_ratio, patch_kernels, merge_kernels, drop_path_rate: as :class:`~mmhybrid.models.CrossFormer`'s
            (defaults 4, (4, 8, 16, 32), (2, 4), 0.2).
        **kwargs: The arguments of every family (``in_channels``, ``out_indices``, ``init_cfg``,
            ...): see :class:`~mmhybrid.models.base.HybridBackbone`.
    """

    family = 'CrossFormer++'
    key = 'crossformer_pp'
    converter = staticmethod(convert_crossformer_pp)
    # configs/crossformer_pp/*.yaml of the official code: head width 32
    arch_zoo: Dict[str, dict] = {
        'pp_small': dict(embed_dims=64, depths=(2, 2, 18, 2), num_heads=(2, 4, 8, 16)),
        'pp_base': dict(embed_dims=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24)),
        'pp_large': dict(embed_dims=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32)),
        'pp_huge': dict(embed_dims=128, depths=(6, 6, 18, 2), num_heads=(4, 8, 16, 32)),
    }
    arch_aliases = {alias: f'pp_{size}' for size in ('small', 'base', 'large', 'huge')
                    for alias in (size, size[0], f'pp_{size[0]}')}
    arch_required = ('embed_dims', 'depths', 'num_heads')
    #: why an exported graph takes one input size only (tools/deployment/export_onnx.py --dynamic)
    export_fixed_size = ('its attention groups, their padding and the position-bias tables are laid out for '
                         'the map size')
    #: how the family appears in timm (see CrossFormer.timm)
    timm = dict(
        variants={'crossformer_pp_s': 'pp_small', 'crossformer_pp_b': 'pp_base', 'crossformer_pp_l': 'pp_large',
                  'crossformer_pp_h': 'pp_huge'},
        first_conv=tuple(f'patch_embed.projs.{i}' for i in range(4)),
        # the official main-branch models/crossformer.py builds the ++ classifiers too (use_acl=True):
        # the same norm (nn.LayerNorm) -> avgpool -> head; the same evaluation as v1
        classifier=('pool', dict(norm_eps=1e-5), {'norm': 'norm', 'head': 'fc'}),
        cfg=dict(crop_pct=0.875, interpolation='bicubic', mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
                 origin_url='https://github.com/cheerss/CrossFormer', paper_ids='arXiv:2303.06908'))
    #: the size the GPU check times (no official implementation in the side-by-side bench)
    benchmark = dict(name='CrossFormer++-S', cfg=dict(arch='small'), official=None)
    #: a small arch for fast CPU checks (tests, ``preflight.py --tiny``): with the default G (4, 4, 14, 7),
    #: I (4, 2, 1, 1), SDA and LDA in stages 0-1, an ACL after block 2 of stage 1, and the small-map rule
    #: (one group of the longer side) in stages 2-3 at 70x90
    test_arch = dict(embed_dims=32, depths=(2, 4, 1, 1), num_heads=(1, 2, 4, 8))
    # the main-branch LDA and small-map rule, and the block with the activation cooling layers
    lda = 'dilated'
    small_maps = 'longer'
    block_type = CrossFormerPPBlock

    def __init__(self,
                 arch: Union[str, dict] = 'pp_small',
                 group_size: Union[int, Sequence[int]] = (4, 4, 14, 7),
                 interval: Union[int, Sequence[int]] = (4, 2, 1, 1),
                 use_acl: bool = True,
                 mlp_ratio: float = 4.0,
                 patch_kernels: Sequence[int] = (4, 8, 16, 32),
                 merge_kernels: Sequence[int] = (2, 4),
                 drop_path_rate: float = 0.2,
                 **kwargs):
        self.use_acl = use_acl
        super().__init__(arch, group_size, interval, mlp_ratio, patch_kernels, merge_kernels, drop_path_rate,
                         **kwargs)

    def block_kwargs(self, index: int, depth: int) -> dict:
        """Whether block ``index`` of a stage of ``depth`` blocks ends with an activation cooling layer."""
        return dict(acl=self.use_acl and has_acl(index, depth))

    def convert_checkpoint(self, ckpt, source: str = 'checkpoint') -> dict:
        """As every family's; a network built with ``use_acl=False`` takes files without ACL
        (which the converter otherwise refuses as CrossFormer v1 files)."""
        if self.use_acl:
            return super().convert_checkpoint(ckpt, source)
        try:
            state = convert_crossformer_pp(ckpt, acl=False)
        except CheckpointMismatchError:
            raise
        except (TypeError, ValueError, KeyError) as err:
            raise CheckpointLoadError(f'{source}: {err}') from None
        return self.adapt_pretrained(state, source)

