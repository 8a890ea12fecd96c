"""timm interop: every mmhybrid backbone as a timm model.

``import mmhybrid.timm_models`` registers the families' variants in timm's model
registry (``crossformer_s``, ``conv2former_t``, ``cvt_13``, ...), so that plain
PyTorch code, detectron2 or any other framework builds them with timm's own API::

    import mmhybrid.timm_models  # noqa: F401  (registers the timm names)
    import timm

    features = timm.create_model('crossformer_s', features_only=True, out_indices=(1, 2, 3),
                                 pretrained=True, pretrained_cfg_overlay=dict(file='crossformer-s.pth'))
    features.feature_info.channels()   # [192, 384, 768]
    features.feature_info.reduction()  # [8, 16, 32]

There is no second implementation: a timm model is a :class:`HybridTimmModel`
holding the mmhybrid backbone (``backbone.*``) and the family's official ImageNet
classifier (``head.*``). An official checkpoint goes through the same reader,
family converter, ``adapt_pretrained`` hook and strict, key-naming load as
``init_cfg=dict(type='Pretrained', ...)`` in OpenMMLab.

The models follow timm's model conventions (``pretrained_cfg`` with ``first_conv`` and
``classifier``, ``num_classes=0`` and ``global_pool=''``, ``forward_features`` /
``forward_head`` / ``forward_intermediates``, FX tracing, ``torch.jit.trace`` and
``torch.export``); ``torch.jit.script`` is refused with a message saying why.

Why a submodule and not ``import mmhybrid``: timm is not a dependency of mmhybrid
(mmdet/mmseg users do not need it), it imports torchvision, which fails at import
with a CPU-only torch build that has no matching torchvision, and it adds about a
second to every ``import mmhybrid`` (also in every mmdet/mmseg config that lists
``custom_imports=['mmhybrid']``).

Adding a family is one :class:`TimmFamily` entry in :data:`FAMILIES`. Families are
looked up in ``mmhybrid.registry.MODELS`` by class name when a model is created, so
every name is registered in timm now and a family that this installation lacks
fails at ``create_model`` with a message naming it.
"""
import dataclasses
import logging
import warnings
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn

try:
    import timm
    from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
    from timm.models import _factory as _timm_factory
    from timm.models._features import feature_take_indices
except ImportError as err:  # timm missing, or its torchvision does not match torch
    raise ImportError(
        'mmhybrid.timm_models needs timm (>= 1.0) and a torchvision that matches torch '
        f'(import failed: {err}). Install them with `pip install timm` in an environment '
        'whose torch has a torchvision build (see README, "Set-up").') from err

from mmengine.model.weight_init import trunc_normal_

from .checkpoints import load_into, load_state_dict_checked, strip_prefix, unwrap_state_dict
from .models.base import TORCHSCRIPT_UNSUPPORTED, registered_families
from .models.layers import LayerNorm2d
from .registry import MODELS

__all__ = ['FAMILIES', 'HybridTimmModel', 'PoolClassifier', 'TimmFamily', 'VARIANTS', 'list_models']

_logger = logging.getLogger(__name__)

IMAGENET_DEFAULT = dict(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
IMAGENET_INCEPTION = dict(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))


# --------------------------------------------------------------------------------------
# Classification heads
# --------------------------------------------------------------------------------------
def _init_head_module(m: nn.Module) -> None:
    """timm/official init of a classifier part: truncated normal 0.02 for conv/Linear, unit norms."""
    if isinstance(m, (nn.Conv2d, nn.Linear)):
        trunc_normal_(m.weight, std=0.02)
        nn.init.zeros_(m.bias)
    else:
        m.reset_parameters()


def _linear(in_dims: int, num_classes: int) -> nn.Module:
    """A new classifier Linear (Identity for 0 classes)."""
    if num_classes <= 0:
        return nn.Identity()
    fc = nn.Linear(in_dims, num_classes)
    _init_head_module(fc)
    return fc


def _check_pool(global_pool: str, num_classes: int, family: str = 'mmhybrid') -> None:
    """The pooling values the classifiers take: 'avg' (the official classifiers') and ''."""
    if global_pool not in ('avg', ''):
        raise ValueError(f"{family} classifiers pool by average only (global_pool='avg'), or not at all "
                         f"(global_pool='' with num_classes=0: the unpooled features), got {global_pool!r}.")
    if global_pool == '' and num_classes:
        raise ValueError(f"global_pool='' (no pooling) needs num_classes=0: the {family} classifier is a Linear "
                         f'layer on pooled features, got num_classes={num_classes}.')


class PoolClassifier(nn.Module):
    """Optional 1x1 conv + GELU, a norm over the channels, global average pool, dropout, Linear.

    Without ``hidden_dims`` this is CrossFormer's and CrossFormer++'s classifier (LayerNorm
    on the last map's tokens, average pool, ``head``) or, with ``norm='group'``, CloFormer's
    (GroupNorm(1, C) on the map, average pool, ``head``); with ``hidden_dims=1280``
    it is Conv2Former's (1x1 conv to 1280, GELU, LayerNorm on every position,
    average pool, ``pred``).

    Args:
        in_dims (int): Channels of the last stage map.
        num_classes (int): Classes; 0 leaves the pooled features (``fc`` is Identity).
        drop_rate (float): Dropout before ``fc``. Default: 0.
        hidden_dims (int, optional): Width of the 1x1 conv before the norm; None: no conv.
        norm (str): 'layer' (LayerNorm over the channels of every position) or 'group'
            (GroupNorm with one group: over channels and positions of each image).
        norm_eps (float): Norm epsilon. Default: 1e-5.
        pool_type (str): 'avg', or '' for no pooling (``num_classes`` 0): the head then
            returns the normalised map. Default: 'avg'.
    """

    #: the Linear layers a new number of classes replaces
    classifier_names = ('fc', )
    #: whether the model's features are ``(last map, class token)`` instead of the last map
    reads_tokens = False

    def __init__(self, in_dims: int, num_classes: int, drop_rate: float = 0.0,
                 hidden_dims: Optional[int] = None, norm: str = 'layer', norm_eps: float = 1e-5,
                 pool_type: str = 'avg'):
        super().__init__()
        if norm not in ('layer', 'group'):
            raise ValueError(f"norm must be 'layer' or 'group', got {norm!r}.")
        _check_pool(pool_type, num_classes)
        self.num_features = in_dims
        self.hidden_size = hidden_dims or in_dims
        self.pool_type = pool_type
        self.conv = nn.Conv2d(in_dims, hidden_dims, 1) if hidden_dims else None
        self.act = nn.GELU() if hidden_dims else None
        self.norm = (LayerNorm2d(self.hidden_size, eps=norm_eps) if norm == 'layer' else
                     nn.GroupNorm(1, self.hidden_size, eps=norm_eps))
        self.drop = nn.Dropout(drop_rate)
        self.fc = _linear(self.hidden_size, num_classes)
        for m in (self.conv, self.norm):
            if m is not None:
                _init_head_module(m)

    @classmethod
    def from_backbone(cls, backbone: nn.Module, num_classes: int, drop_rate: float, **kwargs) -> 'PoolClassifier':
        """The classifier for ``backbone``'s last stage map."""
        return cls(backbone.stage_channels[-1], num_classes, drop_rate, **kwargs)

    def reset(self, num_classes: int, pool_type: Optional[str] = None) -> None:
        """Replace the final Linear by a new one for ``num_classes`` (Identity for 0); optionally
        change the pooling ('avg', or '' for none)."""
        pool_type = self.pool_type if pool_type is None else pool_type
        _check_pool(pool_type, num_classes)
        self.pool_type = pool_type
        self.fc = _linear(self.hidden_size, num_classes)

    def get_classifier(self) -> nn.Module:
        return self.fc

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """``(B, C, H, W)`` last stage map -> logits ``(B, classes)`` (or pooled ``(B, hidden)``;
        with ``pool_type=''`` the normalised ``(B, hidden, H, W)`` map)."""
        if self.conv is not None:
            x = self.act(self.conv(x))
        x = self.norm(x)
        if not self.pool_type:
            return self.drop(x)
        x = self.drop(x.mean((2, 3)))
        return x if pre_logits else self.fc(x)


class CvTClassifier(nn.Module):
    """CvT's official classifier: LayerNorm on the last stage's class token, then ``head``.

    For an arch without class token the official model normalises every token of
    the last stage and averages them; so does this head.

    Args:
        in_dims (int): Width of the last official stage.
        num_classes (int): Classes; 0 leaves the normalised token (``fc`` is Identity).
        drop_rate (float): Dropout before ``fc`` (the official model has none). Default: 0.
        norm_eps (float): LayerNorm epsilon (official: 1e-5).
        pool_type (str): 'avg' (the official head: the class token, or the token average), or ''
            (``num_classes`` 0): ``(last map, normalised class token)``, or without class token
            ``(normalised token map, None)``. Default: 'avg'.
    """

    classifier_names = ('fc', )
    reads_tokens = True

    def __init__(self, in_dims: int, num_classes: int, drop_rate: float = 0.0, norm_eps: float = 1e-5,
                 pool_type: str = 'avg'):
        super().__init__()
        _check_pool(pool_type, num_classes, 'CvT')
        self.num_features = self.hidden_size = in_dims
        self.pool_type = pool_type
        self.norm = nn.LayerNorm(in_dims, eps=norm_eps)
        self.drop = nn.Dropout(drop_rate)
        self.fc = _linear(in_dims, num_classes)

    @classmethod
    def from_backbone(cls, backbone: nn.Module, num_classes: int, drop_rate: float, **kwargs) -> 'CvTClassifier':
        """The classifier of ``backbone``'s last official stage; the dense-only stride-32 level is refused."""
        if getattr(backbone, 'extra_stage', False):
            raise ValueError('The CvT classifier reads the last official stage; extra_stage=True adds a '
                             'stride-32 level for dense heads only. Use extra_stage with features_only=True.')
        return cls(backbone.stage_channels[backbone.num_official_stages - 1], num_classes, drop_rate, **kwargs)

    def reset(self, num_classes: int, pool_type: Optional[str] = None) -> None:
        """Replace the final Linear by a new one for ``num_classes`` (Identity for 0); optionally
        change the pooling ('avg' or '')."""
        pool_type = self.pool_type if pool_type is None else pool_type
        _check_pool(pool_type, num_classes, 'CvT')
        self.pool_type = pool_type
        self.fc = _linear(self.hidden_size, num_classes)

    def get_classifier(self) -> nn.Module:
        return self.fc

    def forward(self, features: Tuple[torch.Tensor, Optional[torch.Tensor]], pre_logits: bool = False):
        """``(last stage map, class token or None)`` -> logits ``(B, classes)`` (or ``(B, C)`` features)."""
        last_map, cls_token = features
        if not self.pool_type:
            if cls_token is not None:
                return self.drop(last_map), self.drop(self.norm(cls_token))
            return self.drop(self.norm(last_map.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)), None
        if cls_token is not None:
            x = self.norm(cls_token)
        else:
            x = self.norm(last_map.flatten(2).transpose(1, 2)).mean(1)
        x = self.drop(x)
        return x if pre_logits else self.fc(x)


class ConformerClassifier(nn.Module):
    """Conformer's two official classifiers, one per branch, whose logits are summed.

    ``conv_cls_head`` reads the average-pooled last CNN map and ``trans_cls_head``
    the class token after ``trans_norm`` (LayerNorm, eps 1e-5). The official model
    returns both logits, trains each with half the loss and reports the accuracy
    of their sum; ``forward`` returns the sum, :meth:`forward_heads` both.
    ``pre_logits`` gives the two inputs concatenated: ``(B, C3 + embed_dims)``,
    which is also ``num_features`` (the width of the features the heads read).

    Args:
        conv_dims (int): Channels of the last CNN map.
        embed_dims (int): Width of the transformer branch.
        num_classes (int): Classes; 0 leaves the concatenated features.
        drop_rate (float): Dropout before both Linears (the official model has none). Default: 0.
        pool_type (str): 'avg', or '' (``num_classes`` 0): ``(last CNN map, normalised class token)``
            without pooling. Default: 'avg'.
    """

    classifier_names = ('conv_cls_head', 'trans_cls_head')
    reads_tokens = True

    def __init__(self, conv_dims: int, embed_dims: int, num_classes: int, drop_rate: float = 0.0,
                 pool_type: str = 'avg'):
        super().__init__()
        self.conv_dims, self.embed_dims = conv_dims, embed_dims
        self.num_features = self.hidden_size = conv_dims + embed_dims
        self.trans_norm = nn.LayerNorm(embed_dims)
        self.drop = nn.Dropout(drop_rate)
        self.pool_type = pool_type
        self.reset(num_classes)

    @classmethod
    def from_backbone(cls, backbone: nn.Module, num_classes: int, drop_rate: float,
                      **kwargs) -> 'ConformerClassifier':
        return cls(backbone.stage_channels[-1], backbone.embed_dims, num_classes, drop_rate, **kwargs)

    def reset(self, num_classes: int, pool_type: Optional[str] = None) -> None:
        """New Linears for ``num_classes`` on both branches (Identity for 0); optionally change the
        pooling ('avg' or '')."""
        pool_type = self.pool_type if pool_type is None else pool_type
        _check_pool(pool_type, num_classes, 'Conformer')
        self.pool_type = pool_type
        self.num_classes = max(num_classes, 0)
        self.conv_cls_head = _linear(self.conv_dims, num_classes)
        self.trans_cls_head = _linear(self.embed_dims, num_classes)

    def get_classifier(self) -> Tuple[nn.Module, nn.Module]:
        return self.conv_cls_head, self.trans_cls_head

    def _inputs(self, features: Tuple[torch.Tensor, torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
        last_map, cls_token = features
        return self.drop(last_map.mean((2, 3))), self.drop(self.trans_norm(cls_token))

    def forward_heads(self, features: Tuple[torch.Tensor, torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(last CNN map, class token)`` -> ``(conv_cls, trans_cls)``, the official model's two outputs."""
        pooled, token = self._inputs(features)
        return self.conv_cls_head(pooled), self.trans_cls_head(token)

    def forward(self, features: Tuple[torch.Tensor, torch.Tensor], pre_logits: bool = False):
        """``(last CNN map, class token)`` -> summed logits (or, with ``pre_logits`` or 0 classes,
        the concatenated head inputs; with ``pool_type=''`` the map and the normalised token)."""
        if not self.pool_type:
            last_map, cls_token = features
            return self.drop(last_map), self.drop(self.trans_norm(cls_token))
        if pre_logits or not self.num_classes:
            return torch.cat(self._inputs(features), dim=1)
        conv_cls, trans_cls = self.forward_heads(features)
        return conv_cls + trans_cls


# --------------------------------------------------------------------------------------
# The family table
# --------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class TimmFamily:
    """How one mmhybrid family appears in timm.

    Args:
        backbone: class name in ``mmhybrid.registry.MODELS``, looked up when a model
            is created.
        variants: timm name -> ``arch``, or -> dict of backbone arguments with ``arch``
            (the other keys are defaults a caller may override).
        head: the classifier class (:class:`PoolClassifier`, :class:`CvTClassifier`,
            :class:`ConformerClassifier`): ``from_backbone(backbone, num_classes,
            drop_rate, pool_type=..., **head_args)``, ``num_features``, ``hidden_size``,
            ``classifier_names``, ``reads_tokens``, ``pool_type``, ``reset(num_classes,
            pool_type)``, ``get_classifier()`` and ``forward(features, pre_logits)``; None:
            no classifier, the model returns the multi-scale maps.
        head_args: extra arguments of ``head.from_backbone`` (e.g. ``norm_eps``).
        head_keys: official head module name -> module name inside ``head``, used to
            take the classifier weights from official checkpoints.
        containers: checkpoint containers in the order the family's converter prefers
            them (None: the converters' common default), so the head comes from the
            same container as the backbone.
        params: timm name -> published parameter count in millions with the official
            head (checked by the tests).
        cfg: timm pretrained-config fields (data config, paper) shared by the variants.
        first_conv: the convolution(s) that read the image, names inside the backbone
            (timm's ``pretrained_cfg['first_conv']``, as ``backbone.<name>``).
    """
    backbone: str
    variants: Dict[str, Union[str, dict]]
    first_conv: Tuple[str, ...] = ()
    head: Optional[type] = None
    head_args: Dict[str, Any] = dataclasses.field(default_factory=dict)
    head_keys: Dict[str, str] = dataclasses.field(default_factory=dict)
    containers: Optional[Tuple[str, ...]] = None
    params: Dict[str, float] = dataclasses.field(default_factory=dict)
    cfg: Dict[str, Any] = dataclasses.field(default_factory=dict)


#: a family's ``timm['classifier']`` kind -> its classifier class
CLASSIFIERS = {'pool': PoolClassifier, 'cvt': CvTClassifier, 'conformer': ConformerClassifier}


def timm_family(cls: type) -> TimmFamily:
    """The :class:`TimmFamily` a backbone family declares in its ``timm`` attribute."""
    spec = cls.timm
    kind, head_args, head_keys = spec['classifier']
    return TimmFamily(cls.__name__, dict(spec['variants']), first_conv=tuple(spec.get('first_conv', ())),
                      head=CLASSIFIERS[kind], head_args=dict(head_args), head_keys=dict(head_keys),
                      containers=spec.get('containers'), params=dict(spec.get('params', {})),
                      cfg=dict(spec.get('cfg', {})))


#: every registered family that declares ``timm``, by key
FAMILIES: Tuple[TimmFamily, ...] = tuple(timm_family(cls) for _, cls in sorted(registered_families().items())
                                         if cls.timm is not None)


# --------------------------------------------------------------------------------------
# The timm model
# --------------------------------------------------------------------------------------
class HybridTimmModel(nn.Module):
    """An mmhybrid backbone, plus the family's classifier if it has one, with timm's model interface.

    ``forward`` returns logits when there is a classifier (pooled features with
    ``num_classes=0``), else the backbone's multi-scale maps. ``forward_intermediates``
    (used by ``features_only=True``) returns the stage maps. Weights: ``backbone.*``
    are the backbone's own names, ``head.*`` the classifier.

    ``forward_features`` returns what the classifier reads: the last stage map, or
    for a classifier on the class token (Conformer, CvT) the pair ``(last stage
    map, class token)``; the backbone then runs with ``with_tokens=True``. Those two
    are timm's "non-standard" models: ``forward_features`` is a tuple, and
    ``num_features`` is the width of the pooled features (Conformer: the CNN map's
    channels plus the class token's).
    ``forward_intermediates(x)`` returns ``(forward_features(x), stage maps)``, so
    ``forward_head(forward_intermediates(x)[0])`` gives the logits.

    The whole model traces with ``torch.fx`` (torchvision's feature extraction, with
    or without timm's leaf modules), ``torch.jit.trace`` and ``torch.export``;
    ``torch.jit.script`` is refused (see ``TORCHSCRIPT_UNSUPPORTED``).

    Args:
        family (TimmFamily): The family's table entry.
        backbone_cls (type): The registered mmhybrid backbone class.
        arch (str | dict): Backbone arch.
        num_classes (int): Classes of the classifier; 0: pooled features. Must be 0
            for a family without classifier. Default: 1000.
        in_chans (int): Image channels. Default: 3.
        global_pool (str): 'avg' (the official classifiers' pooling), or '' with
            ``num_classes=0``: ``forward`` returns the unpooled features (the last map
            after the head's norm; Conformer and CvT: the map and the normalised class
            token). Default: 'avg'.
        drop_rate (float): Dropout before the final Linear. Default: 0.
        drop_path_rate (float): Stochastic depth of the backbone. Default: 0 (timm's
            convention; the OpenMMLab configs set their own).
        with_head (bool): Build the classifier (False for ``features_only``).
        random_init (bool): Run the family's random initialisation; False when every
            backbone weight is about to be loaded (``pretrained=True``: the strict load
            fills them all). Default: True.
        **backbone_kwargs: Other backbone arguments (e.g. CrossFormer ``group_size``).
    """

    output_fmt = 'NCHW'

    def __init__(self, family: TimmFamily, backbone_cls: type, arch: Union[str, dict], num_classes: int = 1000,
                 in_chans: int = 3, global_pool: str = 'avg', drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0, with_head: bool = True, random_init: bool = True,
                 **backbone_kwargs):
        super().__init__()
        global_pool = 'avg' if global_pool is None else global_pool
        if with_head and family.head is not None:
            _check_pool(global_pool, num_classes, family.backbone)
        if family.head is None and num_classes:
            raise ValueError(f'mmhybrid has no classification head for {family.backbone}: build it with '
                             'num_classes=0 (its forward returns the multi-scale maps) or features_only=True.')
        self.family = family
        self.arch_name = arch if isinstance(arch, str) else 'custom'
        self.in_chans = in_chans
        self.drop_rate = drop_rate
        if with_head and family.head is not None and family.head.reads_tokens:
            backbone_kwargs['with_tokens'] = True
        self.backbone = self._build_backbone(backbone_cls, dict(arch=arch, in_channels=in_chans,
                                                                drop_path_rate=drop_path_rate, **backbone_kwargs))
        if random_init:
            self.backbone._default_init()  # the family's own init (init_weights() would also log every tensor)
        channels, strides = self.backbone.stage_channels, self.backbone.stage_strides
        names = {id(m): n for n, m in self.backbone.named_modules()}   # every stage is a registered module
        self.feature_info = [dict(num_chs=c, reduction=s, module=f'backbone.{names[id(stage)]}', index=i)
                             for i, (stage, c, s) in enumerate(zip(self.backbone.stage_modules(), channels, strides))]
        self.head = family.head.from_backbone(self.backbone, num_classes, drop_rate, pool_type=global_pool,
                                              **family.head_args) \
            if with_head and family.head is not None else None
        self.num_classes = num_classes if self.head is not None else 0
        self.num_features = self.head.num_features if self.head is not None else channels[-1]
        self.head_hidden_size = self.head.hidden_size if self.head is not None else self.num_features
        self.register_load_state_dict_pre_hook(_convert_foreign_state)

    @staticmethod
    def _build_backbone(backbone_cls: type, kwargs: dict) -> nn.Module:
        """The backbone with every stage out (forward_intermediates picks from them)."""
        backbone = backbone_cls(**kwargs)
        every = tuple(range(len(backbone.stage_modules())))
        if tuple(backbone.out_indices) != every:  # a family whose default returns fewer stages
            backbone = backbone_cls(**kwargs, out_indices=every)
        return backbone

    # -- timm model interface -------------------------------------------------------
    def _run(self, x: torch.Tensor):
        """The backbone: (every stage map, ``(patch_tokens, cls_token)`` or None)."""
        outs = self.backbone(x)
        n = len(self.feature_info)
        return tuple(outs[:n]), (outs[n] if len(outs) > n else None)

    def _features(self, maps: Tuple[torch.Tensor, ...], tokens) -> Union[torch.Tensor, tuple]:
        if self.head is not None and self.head.reads_tokens:
            return maps[-1], tokens[1]
        return maps[-1]

    def forward_features(self, x: torch.Tensor):
        """What the classifier reads: the last stage map (NCHW), or ``(last stage map, class token)``."""
        return self._features(*self._run(x))

    def forward_head(self, x, pre_logits: bool = False) -> torch.Tensor:
        """Classifier on ``forward_features``' output; ``pre_logits`` stops before the final Linear(s)."""
        if self.head is None:
            raise RuntimeError(f'This {self.family.backbone} model has no classification head.')
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor):
        """Logits (or pooled features), or the backbone's multi-scale maps when there is no head."""
        if self.head is None:
            return self._run(x)[0]
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(self, x: torch.Tensor, indices: Optional[Union[int, Sequence[int]]] = None,
                              norm: bool = False, stop_early: bool = False, output_fmt: str = 'NCHW',
                              intermediates_only: bool = False):
        """Stage maps (timm's feature API, used by ``features_only=True``).

        Args:
            x: ``(B, C, H, W)`` images.
            indices: stages to return: None all, an int n the last n, or a sequence
                (negatives count from the end).
            norm: not supported (the dense backbones have no final norm).
            stop_early: accepted for timm; the backbone runs up to its last output
                stage (all of them unless :meth:`prune_intermediate_layers` cut them).
            output_fmt: only 'NCHW'.
            intermediates_only: return only the maps.

        Returns:
            The list of maps, or ``(forward_features(x), maps)``: the last map, or for
            Conformer and CvT classifiers ``(last map, class token)``, from the same pass.
        """
        if output_fmt != 'NCHW':
            raise ValueError(f'mmhybrid backbones return NCHW maps, got output_fmt={output_fmt!r}.')
        if norm:
            raise ValueError('mmhybrid backbones return the stage maps without a final norm; use norm=False.')
        take, _ = feature_take_indices(len(self.feature_info), indices)
        maps, tokens = self._run(x)
        if max(take) >= len(maps):
            raise ValueError(f'This model was pruned to stages 0..{len(maps) - 1} '
                             f'(prune_intermediate_layers); stage {max(take)} no longer runs.')
        intermediates = [maps[i] for i in take]
        return intermediates if intermediates_only else (self._features(maps, tokens), intermediates)

    def prune_intermediate_layers(self, indices: Optional[Union[int, Sequence[int]]] = 1,
                                  prune_norm: bool = False, prune_head: bool = True) -> List[int]:
        """Stop the backbone after the last stage in ``indices``, drop the classifier
        (``prune_head``) and return the absolute stage indices.

        timm's ``features_only`` wrapper calls this, so ``out_indices=(0, 1)`` runs two
        stages. The later stages keep their weights (a full checkpoint still loads) but
        no longer run.
        """
        take, max_index = feature_take_indices(len(self.feature_info), indices)
        if prune_head:
            self.head, self.num_classes = None, 0
            if hasattr(self.backbone, 'with_tokens'):
                self.backbone.with_tokens = False
            self.backbone.out_indices = tuple(range(max_index + 1))
        return take

    def get_classifier(self):
        """The final Linear (Conformer: the pair of them), or Identity without classifier."""
        return self.head.get_classifier() if self.head is not None else nn.Identity()

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        """New final Linear for ``num_classes`` (0: pooled features); the rest of the head is kept.

        ``global_pool``: None keeps the pooling, 'avg' pools, '' (with ``num_classes=0``)
        makes ``forward`` return the unpooled features (see the class docstring).
        """
        if self.head is None:
            raise ValueError(f'This {self.family.backbone} model has no classification head.')
        _check_pool(self.head.pool_type if global_pool is None else global_pool, num_classes, self.family.backbone)
        self.head.reset(num_classes, global_pool)
        self.num_classes = num_classes

    def __prepare_scriptable__(self):
        """``torch.jit.script`` calls this first: refused with a clear message."""
        raise RuntimeError(TORCHSCRIPT_UNSUPPORTED)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.backbone.with_cp = enable

    # -- weights ----------------------------------------------------------------------
    def convert_checkpoint(self, ckpt, source: str = 'checkpoint') -> Dict[str, torch.Tensor]:
        """An official, OpenMMLab or timm-format checkpoint -> this model's complete state dict.

        The backbone part goes through the family converter and the backbone's
        ``adapt_pretrained`` hook, exactly as ``init_cfg=dict(type='Pretrained')``
        does; the classifier is taken from the official head keys (or this model's
        ``head.*`` keys) of the same container. A classifier for another number of
        classes, or a checkpoint without classifier, leaves those weights at their
        initial values (logged).

        Args:
            ckpt: what ``torch.load`` returned, or a state dict.
            source: where it came from, for messages.
        """
        out = {f'backbone.{k}': v for k, v in self.backbone.convert_checkpoint(ckpt, source=source).items()}
        if self.head is not None:
            out.update({f'head.{k}': v for k, v in self._head_state(ckpt, source).items()})
        return out

    def _head_state(self, ckpt, source: str) -> Dict[str, torch.Tensor]:
        prefer = dict(prefer=self.family.containers) if self.family.containers else {}
        flat = strip_prefix(unwrap_state_dict(ckpt, **prefer), 'module.')
        own = self.head.state_dict()
        found = {}
        for key, value in flat.items():
            module, _, param = key.rpartition('.')
            if key.startswith('head.') and key[5:] in own:  # already this model's naming
                found[key[5:]] = value
            elif module in self.family.head_keys:
                found[f'{self.family.head_keys[module]}.{param}'] = value
        linears = [f'{name}.{p}' for name in self.head.classifier_names for p in ('weight', 'bias')]
        other_classes = [k for k in linears
                         if k in found and k in own and found[k].shape != own[k].shape]
        if other_classes:
            _logger.info('%s: its classifier has %d classes, this model %d: the final Linear(s) '
                         'keep their initial weights.', source, found[other_classes[0]].shape[0], self.num_classes)
        absent = [k for k in own if k not in found]
        if absent:
            _logger.warning('%s has no %s classifier weights for %s: they keep their initial values.',
                            source, self.family.backbone, ', '.join(f'head.{k}' for k in absent))
        keep = set(absent) | set(other_classes)
        return {k: (own[k] if k in keep else found[k]) for k in own}

    def load_pretrained(self, filename: str) -> None:
        """Load an official, OpenMMLab or timm-format checkpoint file (path or URL) strictly.

        What ``timm.create_model(..., pretrained=True, pretrained_cfg_overlay=dict(file=...))``
        calls. Mismatched keys or shapes are refused by name.
        """
        load_into(self, filename, convert=self.convert_checkpoint, named_as=self.backbone)


def _prefix_wrapped_state(module: nn.Module, state_dict, prefix, *args) -> None:
    """load_state_dict pre-hook of a ``features_only`` wrapper: a checkpoint of the bare model
    (official, OpenMMLab or timm naming) is moved under the wrapper's ``model.``."""
    keys = [k for k in state_dict if k.startswith(prefix)]
    if keys and not any(k[len(prefix):].startswith('model.') for k in keys):
        for k in keys:
            state_dict[f'{prefix}model.{k[len(prefix):]}'] = state_dict.pop(k)


def _load_checkpoint(model: nn.Module, checkpoint_path, *args, **kwargs):
    """timm's ``load_checkpoint`` (what ``create_model(checkpoint_path=...)`` calls), routed
    through mmhybrid's safe loader and converter for mmhybrid models (bare or ``features_only``).
    Other timm models go to timm's own function unchanged."""
    inner = getattr(model, 'model', model)
    if isinstance(inner, HybridTimmModel):
        inner.load_pretrained(str(checkpoint_path))
        return None
    return _timm_load_checkpoint(model, checkpoint_path, *args, **kwargs)


_timm_load_checkpoint = getattr(_timm_factory.load_checkpoint, '__wrapped__', _timm_factory.load_checkpoint)
_load_checkpoint.__wrapped__ = _timm_load_checkpoint
_timm_factory.load_checkpoint = _load_checkpoint


def _convert_foreign_state(module: HybridTimmModel, state_dict, prefix, local_metadata, strict, missing_keys,
                           unexpected_keys, error_msgs) -> None:
    """load_state_dict pre-hook: an official or OpenMMLab state dict is converted first.

    So ``model.load_state_dict(official_state)`` and timm's ``checkpoint_path=`` work;
    a dict in this model's own naming (only ``backbone.*`` and ``head.*``) is left alone
    (the backbone's own pre-hook renames keys of an earlier mmhybrid layout in it,
    see ``HybridBackbone.legacy_key``).
    """
    keys = [k for k in state_dict if k.startswith(prefix)]
    if not keys or all(k[len(prefix):].startswith(('backbone.', 'head.')) for k in keys):
        return
    foreign = {k[len(prefix):]: state_dict.pop(k) for k in keys}
    for key, value in module.convert_checkpoint(foreign, source='the state dict').items():
        state_dict[prefix + key] = value


# --------------------------------------------------------------------------------------
# Registration in timm
# --------------------------------------------------------------------------------------
#: registered timm name -> (family, backbone arguments with 'arch')
VARIANTS: Dict[str, Tuple[TimmFamily, dict]] = {}
#: timm reads the pretrained configs of a module's models from its ``default_cfgs``
default_cfgs: Dict[str, Any] = {}

_SOURCES = ('file', 'url', 'state_dict', 'hf_hub_id')


def _cfg_value(pretrained_cfg, overlay: dict, key: str):
    if overlay.get(key) is not None:
        return overlay[key]
    if isinstance(pretrained_cfg, dict):
        return pretrained_cfg.get(key)
    return getattr(pretrained_cfg, key, None)


def _checked_state(state: dict, model: HybridTimmModel) -> Dict[str, torch.Tensor]:
    """timm's filter for ``pretrained_cfg_overlay=dict(state_dict=...)``: convert, and refuse a mismatch by name."""
    converted = model.convert_checkpoint(state, source='the state dict')
    load_state_dict_checked(model, converted, source='the state dict')
    return converted


def _create(name: str, pretrained: bool = False, pretrained_cfg=None, pretrained_cfg_overlay=None,
            **kwargs) -> nn.Module:
    family, spec = VARIANTS[name]
    backbone_cls = MODELS.get(family.backbone)
    if backbone_cls is None:
        raise RuntimeError(
            f'timm model {name!r} needs the mmhybrid backbone {family.backbone!r}, which this mmhybrid does '
            f'not have (registered: {", ".join(sorted(MODELS.module_dict))}).')
    if 'arch' in kwargs:
        raise ValueError(f'The timm name {name!r} fixes arch={spec["arch"]!r}; choose another name '
                         f'({", ".join(n for n, v in VARIANTS.items() if v[0] is family)}) instead of arch=.')
    overlay = dict(pretrained_cfg_overlay or {})
    if pretrained:
        if not any(_cfg_value(pretrained_cfg, overlay, k) for k in _SOURCES):
            raise ValueError(
                f'mmhybrid registers no download location for {name!r}. Download the official checkpoint '
                "(README, 'Pretrained weights') and pass pretrained_cfg_overlay=dict(file='PATH').")
        if any(_cfg_value(pretrained_cfg, overlay, k) for k in ('file', 'url')):
            # read and convert the file exactly as OpenMMLab's init_cfg does (HybridTimmModel.load_pretrained)
            overlay.setdefault('custom_load', True)
    if 'out_indices' in kwargs and not kwargs.get('features_only', False):
        raise ValueError('out_indices selects the feature maps of features_only=True models; without it the '
                         'model returns logits (or, for a family without classifier, every stage map).')
    if kwargs.get('feature_cls', 'getter') != 'getter':
        raise ValueError('mmhybrid timm models give features through forward_intermediates '
                         f"(feature_cls='getter'), got feature_cls={kwargs['feature_cls']!r}.")
    with_head = not kwargs.get('features_only', False)
    model = build_model_with_cfg(
        HybridTimmModel, name, pretrained,
        pretrained_cfg=pretrained_cfg, pretrained_cfg_overlay=overlay,
        feature_cfg=dict(feature_cls='getter', out_indices=None),
        pretrained_filter_fn=_checked_state,
        family=family, backbone_cls=backbone_cls, with_head=with_head, random_init=not pretrained,
        **{**spec, **kwargs})
    if not with_head:  # features_only: official files and the bare model's state dicts load into the wrapper too
        model.register_load_state_dict_pre_hook(_prefix_wrapped_state)
    return model


def registered_name(name: str) -> str:
    """The name a variant gets in timm: its own, or ``mmhybrid_<name>`` if timm already has the name.

    mmhybrid never replaces a model registered by timm or by another package.
    """
    if timm.models.is_model(name) and timm.models.model_entrypoint(name).__module__ != __name__:
        other = timm.models.model_entrypoint(name).__module__
        warnings.warn(f'timm already has a model named {name!r} (from {other}); mmhybrid registers its '
                      f'variant as {"mmhybrid_" + name!r} instead.', stacklevel=2)
        return 'mmhybrid_' + name
    return name


def _register(name: str, family: TimmFamily, spec: Union[str, dict]) -> None:
    spec = dict(spec) if isinstance(spec, dict) else dict(arch=spec)
    reg = registered_name(name)
    VARIANTS[reg] = (family, spec)
    head = family.head is not None
    classifier = tuple(f'head.{n}' for n in family.head.classifier_names) if head else None
    first_conv = tuple(f'backbone.{n}' for n in family.first_conv)
    default_cfgs.update(generate_default_cfgs({reg: {
        **dict(url='', num_classes=1000 if head else 0,
               classifier=(classifier[0] if len(classifier) == 1 else classifier) if head else None,
               first_conv=first_conv[0] if len(first_conv) == 1 else first_conv,
               input_size=(3, 224, 224), pool_size=(7, 7) if head else None),
        **family.cfg}}))

    def entrypoint(pretrained: bool = False, **kwargs) -> nn.Module:
        return _create(reg, pretrained, **kwargs)

    entrypoint.__name__ = entrypoint.__qualname__ = reg
    entrypoint.__module__ = __name__
    entrypoint.__doc__ = (f'mmhybrid {family.backbone} (arch {spec["arch"]!r}) as a timm model: '
                          f'features_only=True gives the stage maps.')
    globals()[reg] = entrypoint
    register_model(entrypoint)


def list_models(available_only: bool = False) -> List[str]:
    """The timm names mmhybrid registered; ``available_only``: those whose backbone exists here."""
    return [n for n, (family, _) in VARIANTS.items()
            if not available_only or MODELS.get(family.backbone) is not None]


for _family in FAMILIES:
    for _name, _spec in _family.variants.items():
        _register(_name, _family, _spec)
