"""Behaviour shared by every mmhybrid backbone.

``HybridBackbone`` holds what is the same across families, written once:

* ``arch`` resolution (a name with aliases, or a dict) with a clear error;
* ``out_indices`` (negatives allowed, never mutating the caller's list);
* ``frozen_stages`` with mmdet ResNet/Swin semantics (-1 nothing, 0 the stem,
  k the stem and stages 0..k-1), frozen parts kept in eval mode with
  ``requires_grad=False`` from construction on;
* ``norm_eval`` (BatchNorm layers in eval mode while training);
* ``with_cp`` gradient checkpointing (``use_reentrant=False``);
* ``init_cfg=dict(type='Pretrained', checkpoint=...)`` and the deprecated
  ``pretrained=``: the file goes through the family's converter, so an official
  checkpoint loads as well as a converted one, and a mismatch is refused by name;
* input validation (a 4D NCHW tensor with ``in_channels`` channels).
"""
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.fx
import torch.nn as nn
from mmengine.logging import MMLogger
from mmengine.model import BaseModule
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.checkpoint import checkpoint

from ..checkpoints.identify import families as registered_families  # noqa: F401  (the families, by key)
from ..checkpoints.load import init_cfg_from_pretrained
from .family import FamilyDeclaration, PretrainedWeights
from .layers import LayerNorm2d, autocast_outputs


def resolve_arch(arch: Union[str, dict], zoo: Dict[str, dict], aliases: Dict[str, str],
                 required: Sequence[str], family: str) -> dict:
    """Turn an ``arch`` argument into a full architecture dict.

    Args:
        arch: a name from ``zoo``, an alias from ``aliases``, or a dict with at
            least the ``required`` keys.
        zoo: name -> architecture dict.
        aliases: short name -> name in ``zoo``.
        required: keys an explicit dict must have.
        family: the family name, for error messages.

    Returns:
        A new dict (the caller's is never modified).
    """
    if isinstance(arch, str):
        name = aliases.get(arch.lower(), arch.lower())
        if name not in zoo:
            valid = sorted(set(zoo) | set(aliases))
            raise ValueError(f'Unknown {family} arch {arch!r}. Valid names: {", ".join(valid)}; '
                             f'or pass a dict with keys {list(required)}.')
        return dict(zoo[name])
    if isinstance(arch, dict):
        missing = [k for k in required if k not in arch]
        if missing:
            raise ValueError(f'A custom {family} arch dict needs the keys {list(required)}; '
                             f'missing {missing} in {arch}.')
        return dict(arch)
    raise TypeError(f'{family} arch must be a name or a dict, got {type(arch).__name__}.')


def normalize_indices(indices: Sequence[int], num: int, what: str = 'out_indices') -> Tuple[int, ...]:
    """Map possibly negative stage indices to ``0..num-1`` and validate them."""
    if isinstance(indices, int):
        indices = (indices, )
    out = []
    for i in indices:
        j = i + num if i < 0 else i
        if not 0 <= j < num:
            raise ValueError(f'{what} entry {i} is out of range for {num} stages '
                             f'(valid: {-num}..{num - 1}).')
        out.append(j)
    if len(set(out)) != len(out):
        raise ValueError(f'{what} {tuple(indices)} names a stage twice.')
    return tuple(out)


def per_stage(value: Union[int, float, Sequence], num: int, name: str) -> tuple:
    """Expand a per-stage option: one number for every stage, or a sequence with one entry per stage.

    Args:
        value: a number, or a sequence of ``num`` entries.
        num: the number of stages.
        name: the option, for the error message.
    """
    if isinstance(value, (int, float)):
        return (value, ) * num
    value = tuple(value)
    if len(value) != num:
        raise ValueError(f'{name} needs one value per stage ({num} stages); {value} is not one entry per stage.')
    return value


def check_image(x: torch.Tensor, in_channels: int, owner: str) -> None:
    """Refuse anything but a 4D NCHW tensor with ``in_channels`` channels.

    A leaf of FX graphs (``torch.fx.wrap``): a traced backbone checks its input when
    the graph runs, as the eager one does.

    Args:
        x: the input.
        in_channels: the channels the backbone was built for.
        owner: the backbone's class name, for the message.
    """
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f'{owner} expects a 4D NCHW image tensor, got {shape}.')
    if x.shape[1] != in_channels:
        raise ValueError(
            f'{owner} expects {in_channels} input channels (in_channels={in_channels}), got {x.shape[1]} '
            f'(input shape {tuple(x.shape)}). Pass NCHW images, or build the backbone with a matching in_channels.')


torch.fx.wrap('check_image')

#: why ``torch.jit.script`` is refused (see :meth:`HybridBackbone.__prepare_scriptable__`)
TORCHSCRIPT_UNSUPPORTED = (
    'mmhybrid models do not support torch.jit.script: TorchScript is deprecated in PyTorch and cannot '
    'compile these networks (shape-dependent Python, tuples with None, mmengine modules). Use '
    'torch.jit.trace or torch.export.export(model, (x, ), strict=False) (both record one input size), '
    'torch.compile, or torch.fx (torchvision.models.feature_extraction.create_feature_extractor).')


class HybridBackbone(FamilyDeclaration, PretrainedWeights, BaseModule):
    """Base class of the mmhybrid backbones.

    A family subclass sets its own options as attributes, calls this constructor,
    builds its modules in :meth:`build`, and implements :meth:`_default_init` (and
    :meth:`stem_modules` / :meth:`stage_modules` when its modules are not
    ``patch_embed`` / ``layers``: registered submodules, one per stage). Its forward calls :meth:`check_input`
    first, runs blocks through :meth:`run_block` so that ``with_cp`` applies, and
    returns through :meth:`finish_outputs`. A family whose module names changed
    maps the earlier ones in :meth:`legacy_key`, so state dicts saved before
    still load (``load_state_dict``, mmengine's ``load_from``/``resume``).

    The arguments below are those of every family; a family's constructor takes
    its own arguments and passes these on as keywords.

    Args:
        arch (str | int | dict, optional): A name in ``arch_zoo`` or ``arch_aliases``,
            or a dict with at least ``arch_required``; resolved into ``arch_spec``.
        in_channels (int): Number of input image channels. Default: 3.
        out_indices (Sequence[int], optional): Stages whose outputs are returned
            (negative indices count from the end). Default: all. Stages after
            the last of them do not run (with DDP their parameters get no gradient:
            drop them from the optimizer or use ``find_unused_parameters=True``).
        frozen_stages (int): -1 freezes nothing, 0 the stem, k the stem and
            stages 0..k-1.
        norm_eval (bool, optional): Keep BatchNorm layers in eval mode during training;
            None: from the moment weights are loaded into the backbone (see
            :attr:`norm_eval`).
        with_cp (bool): Gradient checkpointing of each block.
        out_norms (bool): A norm on every returned map (:meth:`make_out_norm`, a
            channels-first LayerNorm by default), as ConvNeXt's and Swin's dense
            backbones have; named ``out_norms.<stage>``, new layers that official
            files do not have (they keep their initial values and learn at the
            heads' rate under layer-wise lr decay). Default: False, the official
            network.
        pretrained (str, optional): Deprecated; use ``init_cfg``. A model-zoo name
            (``open-mmlab://...``, ``torchvision://...``), which mmseg's ResNet base
            configs pass in as ``model.pretrained``, is ignored with a warning.
        init_cfg (dict, optional): mmengine init config. ``type='Pretrained'``
            loads an official or converted checkpoint through the converter.
    """

    def __init__(self, arch: Union[str, int, dict, None] = None, in_channels: int = 3,
                 out_indices: Optional[Sequence[int]] = None, frozen_stages: int = -1,
                 norm_eval: Optional[bool] = False, with_cp: bool = False, out_norms: bool = False,
                 pretrained: Optional[str] = None, init_cfg: Optional[dict] = None):
        super().__init__(init_cfg=init_cfg_from_pretrained(type(self).__name__, pretrained, init_cfg))
        arch = str(arch) if isinstance(arch, int) else arch
        #: the resolved architecture dict (a copy), and the name it was given by ('custom' for a dict)
        self.arch_spec = {} if arch is None else resolve_arch(
            arch, self.arch_zoo, self.arch_aliases, self.arch_required, self.family)
        self.arch_name = arch if isinstance(arch, str) else 'custom'
        self.in_channels = in_channels
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.with_cp = with_cp
        self.track_loads()
        channels, strides = self.build(self.arch_spec)
        self._finish(channels, strides, out_indices, out_norms)

    def build(self, spec: dict) -> Tuple[Sequence[int], Sequence[int]]:
        """Make the family's stem and stages from the resolved arch (its own options are attributes set
        before ``super().__init__``), and return the channels and strides of every stage's output."""
        raise NotImplementedError

    def _finish(self, channels: Sequence[int], strides: Sequence[int], out_indices, out_norms: bool) -> None:
        """Validate the shared options against the stages, add the output norms, freeze."""
        self.stage_channels, self.stage_strides = tuple(channels), tuple(strides)
        num = len(self.stage_modules())
        # maps come back in stage order, whatever order out_indices lists them in
        self.out_indices = tuple(sorted(normalize_indices(range(num) if out_indices is None else out_indices, num)))
        if not -1 <= self.frozen_stages <= num:
            raise ValueError(f'frozen_stages must be in -1..{num}, got {self.frozen_stages}.')
        self.out_norms = (nn.ModuleDict({str(i): self.make_out_norm(self.stage_channels[i]) for i in self.out_indices})
                          if out_norms else None)
        self._freeze_stages()

    @property
    def norm_eval(self) -> bool:
        """Whether BatchNorm layers stay in eval mode while training.

        ``norm_eval=None`` (the default of the families whose official dense recipe
        freezes BatchNorm statistics) means: trainable statistics until weights are
        loaded into the backbone (``init_cfg``, ``load_from``, ``resume``,
        ``load_state_dict``), frozen from then on. Random BatchNorm statistics are
        never frozen, so training from scratch works.
        """
        if self._norm_eval_arg is None:
            return self._weights_loaded
        return self._norm_eval_arg

    @norm_eval.setter
    def norm_eval(self, value: Optional[bool]) -> None:
        if value not in (None, True, False):
            raise ValueError(f'norm_eval must be True, False or None (frozen once weights are loaded), got {value!r}.')
        self._norm_eval_arg = value

    # -- to be provided by a family -------------------------------------------------
    def stem_modules(self) -> List[nn.Module]:
        """Modules before stage 0 (frozen by ``frozen_stages >= 0``); by default ``self.patch_embed``."""
        return [self.patch_embed]

    def stage_modules(self) -> List[nn.Module]:
        """One module per stage; by default the items of ``self.layers``."""
        return list(self.layers)

    def _default_init(self) -> None:
        """The family's own random initialisation."""

    # -- shared behaviour -----------------------------------------------------------
    @property
    def out_channels(self) -> List[int]:
        """Channels of each returned map (stage order)."""
        return [self.stage_channels[i] for i in self.out_indices]

    @property
    def out_strides(self) -> List[int]:
        """Stride of each returned map (stage order)."""
        return [self.stage_strides[i] for i in self.out_indices]

    def _frozen_modules(self) -> List[nn.Module]:
        if self.frozen_stages < 0:
            return []
        return list(self.stem_modules()) + list(self.stage_modules()[:self.frozen_stages])

    def _freeze_stages(self) -> None:
        for m in self._frozen_modules():
            m.eval()
            for p in m.parameters():
                p.requires_grad = False

    def train(self, mode: bool = True):
        """Set train mode, keeping frozen parts and (with norm_eval) BN in eval mode."""
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, _BatchNorm):
                    m.eval()
        return self

    def run_block(self, block: nn.Module, *args):
        """Run one block, with gradient checkpointing when ``with_cp`` applies."""
        if self.with_cp and self.training and torch.is_grad_enabled():
            return checkpoint(block, *args, use_reentrant=False)
        return block(*args)

    def check_input(self, x: torch.Tensor) -> None:
        """Refuse anything but a 4D NCHW tensor with ``in_channels`` channels (see :func:`check_image`)."""
        check_image(x, self.in_channels, type(self).__name__)

    def __prepare_scriptable__(self):
        """``torch.jit.script`` calls this first: refused with a clear message (TorchScript is
        deprecated and cannot compile these networks; trace, export, compile and FX work)."""
        raise RuntimeError(TORCHSCRIPT_UNSUPPORTED)

    def init_weights(self) -> None:
        """Random init, or load ``init_cfg``'s checkpoint through the converter."""
        cfg = self.init_cfg
        if isinstance(cfg, dict) and cfg.get('type') == 'Pretrained':
            self._default_init()
            self.load_pretrained(cfg['checkpoint'])
            self._is_init = True
            self._freeze_stages()
            return
        self._default_init()
        super().init_weights()

    def _dump_init_info(self) -> None:
        # mmengine's BaseModule writes one entry per parameter (thousands of lines) to
        # the log file of a Runner, or else to the console; a backbone initialised
        # from plain Python keeps the console quiet
        from logging import FileHandler
        if any(isinstance(h, FileHandler) for h in MMLogger.get_current_instance().handlers):
            super()._dump_init_info()

    def make_out_norm(self, channels: int) -> nn.Module:
        """The norm ``out_norms=True`` puts on a returned map of ``channels`` channels."""
        return LayerNorm2d(channels)

    def finish_outputs(self, maps: Sequence) -> tuple:
        """What every family's forward returns: its ``out_indices`` maps (through the output
        norms, if any), then any extra items (class tokens), all in one dtype under autocast.

        Args:
            maps: the maps of the stages in ``out_indices``, in order, then extra items.
        """
        maps = list(maps)
        if self.out_norms is not None:
            for k, i in enumerate(self.out_indices):
                maps[k] = self.out_norms[str(i)](maps[k])
        return autocast_outputs(maps)

    def layer_decay_id(self, name: str, num_layers: int, decay_type: str = 'layer_wise') -> int:
        """Layer id of a backbone parameter for ``mmhybrid.LayerDecayOptimizerConstructor``: 0 the stem,
        ``num_layers`` the deepest layer, ``num_layers + 1`` new layers (output norms). The generic rule
        (:func:`mmhybrid.engine.layer_decay.generic_layer_id`, read from :meth:`stem_modules` and
        :meth:`stage_modules`); a family may replace it with its official one.

        Args:
            name: parameter name inside the backbone (no ``backbone.`` prefix).
            num_layers: number of layer ids above the stem.
            decay_type: 'layer_wise' or 'stage_wise'.
        """
        from ..engine.layer_decay import generic_layer_id
        return generic_layer_id(self, name, num_layers, decay_type)
