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
import logging
import re
import warnings
from functools import lru_cache
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.fx
import torch.nn as nn
from mmengine.logging import MMLogger, print_log
from mmengine.model import BaseModule
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.checkpoint import checkpoint

from ..converters.common import CheckpointMismatchError, load_state_dict_checked, unwrap_state_dict
from ..utils.checkpoint import CheckpointLoadError, load_checkpoint_file
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


#: checkpoint schemes of the mmcv/mmengine/torchvision model zoos (ResNet, VGG, HRNet, ...);
#: none of them holds weights of an mmhybrid family
MODEL_ZOO_PREFIXES = ('open-mmlab://', 'openmmlab://', 'torchvision://', 'modelzoo://', 'mmcls://')


def registered_families() -> Dict[str, type]:
    """Every backbone family in ``mmhybrid.registry.MODELS``, by its ``key`` (the one place a family is named)."""
    from ..registry import MODELS
    return {cls.key: cls for cls in MODELS.module_dict.values()
            if isinstance(cls, type) and issubclass(cls, HybridBackbone) and cls.key}


def _pattern(key: str) -> str:
    return re.sub(r'\d+', '#', key)


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


@lru_cache(maxsize=None)
def _arch_shapes(cls: type, arch: str) -> Dict[str, tuple]:
    """Parameter shapes of one zoo arch, built on the meta device (no memory, milliseconds)."""
    with torch.device('meta'):
        model = cls(arch=arch)
    return {k: tuple(v.shape) for k, v in model.state_dict().items() if not k.endswith('num_batches_tracked')}


def identify_checkpoint(ckpt) -> List[Tuple[str, Optional[str]]]:
    """Which registered families (and zoo archs) a checkpoint's weights fit.

    Args:
        ckpt: what a checkpoint file holds.

    Returns:
        ``(family class name, arch name or None)`` pairs, best fit first: an exact
        match of keys and shapes names the arch; a family whose key pattern (digits
        ignored) covers at least 90% of the keys is listed with None.
    """
    exact, close = [], []
    for cls in sorted(registered_families().values(), key=lambda c: c.key):
        name = cls.__name__
        if not getattr(cls, 'arch_zoo', None):
            continue
        try:
            state = cls.converter(ckpt) if cls.converter else unwrap_state_dict(ckpt)
        except Exception:  # noqa: BLE001  (a converter refusing the file means: not this family)
            continue
        shapes = {k: tuple(v.shape) for k, v in state.items() if not k.endswith('num_batches_tracked')}
        if not shapes:
            continue
        patterns = set()
        for arch in cls.arch_zoo:
            own = _arch_shapes(cls, arch)
            if own == shapes:
                exact.append((name, arch))
                break
            patterns |= {_pattern(k) for k in own}
        else:
            fit = sum(_pattern(k) in patterns for k in shapes) / len(shapes)
            if fit >= 0.9:
                close.append((name, None))
    return exact + close


def mismatch_message(ckpt, model: nn.Module, source: str, err: Exception) -> str:
    """One line for a checkpoint that does not fit ``model``, naming what it fits instead.

    Args:
        ckpt: what the checkpoint file holds.
        model: the backbone it was loaded into.
        source: the file, for the message.
        err: the key-level mismatch (used when the weights fit a custom arch of
            the same family, where the keys say most).
    """
    fits = identify_checkpoint(ckpt)
    if not fits:
        return f'{err} The keys fit none of the mmhybrid families.'
    family, arch = fits[0]
    mine = type(model).__name__
    if family == mine:
        if arch is None:
            return str(err)
        return (f"{source}: the weights fit {family}(arch='{arch}'), not this {mine}(arch="
                f"'{getattr(model, 'arch_name', '?')}'): set arch to match the checkpoint.")
    what = f" (arch='{arch}')" if arch else ' (a custom arch)'
    return (f'{source}: a {family}{what} checkpoint, not one of {mine}: '
            f"use type='mmhybrid.{family}', or a {mine} checkpoint.")


def _pretrained_to_init_cfg(name: str, pretrained: Optional[str], init_cfg: Optional[dict]) -> Optional[dict]:
    """Turn the deprecated ``pretrained=`` into ``init_cfg``, or explain why it is not used.

    mmseg's ``EncoderDecoder`` passes the model-level ``model.pretrained`` into the
    backbone; mmseg's ResNet-based base configs set it to a model-zoo ResNet
    (``open-mmlab://resnet50_v1c``). A drop-in config inherits that value without
    writing it, so a model-zoo name is ignored with a warning instead of being loaded
    into another architecture.

    Args:
        name: the backbone class, for messages.
        pretrained: the ``pretrained`` argument.
        init_cfg: the ``init_cfg`` argument.

    Returns:
        The init_cfg to use.
    """
    if pretrained is None:
        return init_cfg
    where = ('backbone.pretrained, or in mmseg configs the model-level model.pretrained that '
             'EncoderDecoder passes to the backbone')
    if isinstance(pretrained, str) and pretrained.startswith(MODEL_ZOO_PREFIXES):
        print_log(f'{name} ignores pretrained={pretrained!r} ({where}): it names weights of another '
                  'network from a model zoo, not of this backbone. Set model.pretrained=None in your config '
                  'to silence this, and load weights with backbone.init_cfg=dict(type="Pretrained", '
                  'checkpoint=...).', logger='current', level=logging.WARNING)
        return init_cfg
    if init_cfg is not None:
        raise ValueError(f'{name} got both init_cfg={dict(init_cfg)} and pretrained={pretrained!r} ({where}); '
                         'keep one: set model.pretrained=None (mmseg) or drop the backbone\'s init_cfg.')
    warnings.warn(f'pretrained={pretrained!r} is deprecated; use init_cfg=dict(type="Pretrained", '
                  'checkpoint=...) instead.', DeprecationWarning)
    return dict(type='Pretrained', checkpoint=pretrained)


def _rename_legacy_keys(module: 'HybridBackbone', state_dict, prefix, local_metadata, strict, missing_keys,
                        unexpected_keys, error_msgs) -> None:
    """load_state_dict pre-hook of every backbone: keys of an earlier layout (``module.legacy_key``) get
    their current names, in the dict being loaded (a copy that every loader makes), before anything loads."""
    renames = {}
    for key in state_dict:
        if key.startswith(prefix):
            new = module.legacy_key(key[len(prefix):])
            if new is not None:
                renames[key] = prefix + new
    for old, new in renames.items():
        if new not in state_dict:   # a dict that has both keeps the old key: the strict load names it
            state_dict[new] = state_dict.pop(old)


class HybridBackbone(BaseModule):
    """Base class of the mmhybrid backbones.

    A family subclass builds its modules, then calls :meth:`_finish_init`, and
    implements :meth:`_default_init` (and :meth:`stem_modules` /
    :meth:`stage_modules` when its modules are not ``patch_embed`` / ``layers``:
    registered submodules, one per stage). Its forward calls :meth:`check_input`
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

    #: name of the family, for messages
    family: str = 'backbone'
    #: the family's lower-case name (fixtures, ``convert.py FAMILY``, ``CONVERTERS``); None: not a family
    key: Optional[str] = None
    #: pure function official state dict -> project state dict
    converter: Optional[Callable[[dict], dict]] = None

    #: arch name -> architecture dict (a family's published variants)
    arch_zoo: Dict[str, dict] = {}
    #: other names of the variants
    arch_aliases: Dict[str, str] = {}
    #: keys a custom arch dict must have
    arch_required: Tuple[str, ...] = ()
    #: a small custom arch with every kind of block of the family, for fast CPU checks (the test suite,
    #: ``tools/misc/preflight.py --tiny``)
    test_arch: Optional[dict] = None
    #: how the family appears in timm (``mmhybrid.timm_models`` registers every variant from it): ``variants``
    #: (timm name -> arch), ``first_conv``, ``classifier`` (kind, arguments, official module -> classifier
    #: module), ``containers``, ``params`` (published counts), ``cfg`` (data config); None: not in timm
    timm: Optional[dict] = None
    #: what the GPU check and the benchmarks time: ``name``, backbone ``cfg`` (arch and options), and the
    #: ``official`` builder of the side-by-side bench (or None)
    benchmark: Optional[dict] = None
    #: why an exported graph of the family takes one input size only; None: any size (``--dynamic``)
    export_fixed_size: Optional[str] = None

    def __init__(self, arch: Union[str, int, dict, None] = None, in_channels: int = 3,
                 out_indices: Optional[Sequence[int]] = None, frozen_stages: int = -1,
                 norm_eval: Optional[bool] = False, with_cp: bool = False, out_norms: bool = False,
                 pretrained: Optional[str] = None, init_cfg: Optional[dict] = None):
        init_cfg = _pretrained_to_init_cfg(type(self).__name__, pretrained, init_cfg)
        super().__init__(init_cfg=init_cfg)
        if arch is not None:
            arch = str(arch) if isinstance(arch, int) else arch
            #: the resolved architecture dict (a copy), and the name it was given by ('custom' for a dict)
            self.arch_spec = resolve_arch(arch, self.arch_zoo, self.arch_aliases, self.arch_required, self.family)
            self.arch_name = arch if isinstance(arch, str) else 'custom'
        self.in_channels = in_channels
        self._out_indices_arg = (None if out_indices is None else
                                 tuple(out_indices) if not isinstance(out_indices, int) else (out_indices, ))
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.with_cp = with_cp
        self._out_norms_arg = out_norms
        self._weights_loaded = False
        self.register_load_state_dict_pre_hook(_rename_legacy_keys)

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

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # every loading path (init_cfg, mmengine's load_from/resume, timm, plain
        # load_state_dict) passes here: remember that the weights are no longer random
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        if any(k.startswith(prefix) for k in state_dict):
            self._weights_loaded = True

    # -- to be provided by a family -------------------------------------------------
    def stem_modules(self) -> List[nn.Module]:
        """Modules before stage 0 (frozen by ``frozen_stages >= 0``); by default ``self.patch_embed``."""
        return [self.patch_embed]

    def stage_modules(self) -> List[nn.Module]:
        """One module per stage; by default the items of ``self.layers``."""
        return list(self.layers)

    def _default_init(self) -> None:
        """The family's own random initialisation."""

    def legacy_key(self, key: str) -> Optional[str]:
        """The current name of a state-dict key of an earlier mmhybrid layout of this family.

        Every load of a state dict (``load_state_dict``, mmengine's ``load_from``
        and ``resume``, also of whole detectors) renames the keys for which this
        returns a name, unless the dict already has that name; so files saved
        before a family's modules were renamed keep loading. By default nothing
        is renamed.

        Args:
            key: a key relative to the backbone (no ``backbone.`` prefix).

        Returns:
            The key's current name, or None when it is not a key of an earlier layout.
        """
        return None

    # -- shared behaviour -----------------------------------------------------------
    def _finish_init(self, stage_channels: Sequence[int], stage_strides: Sequence[int]) -> None:
        """Validate the shared options once the modules exist, and freeze.

        Args:
            stage_channels: channels of every stage output.
            stage_strides: stride of every stage output.
        """
        num = len(self.stage_modules())
        # maps come back in stage order, whatever order out_indices lists them in
        indices = range(num) if self._out_indices_arg is None else self._out_indices_arg
        self.out_indices = tuple(sorted(normalize_indices(indices, num)))
        if not -1 <= self.frozen_stages <= num:
            raise ValueError(f'frozen_stages must be in -1..{num}, got {self.frozen_stages}.')
        self.stage_channels = tuple(stage_channels)
        self.stage_strides = tuple(stage_strides)
        self.out_norms = (nn.ModuleDict({str(i): self.make_out_norm(self.stage_channels[i]) for i in self.out_indices})
                          if self._out_norms_arg else None)
        self._freeze_stages()

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

    def load_pretrained(self, filename: str) -> None:
        """Load an official or converted checkpoint file (path, URL or model-zoo name) strictly.

        Args:
            filename: the checkpoint; it is read by the safe loader and its weights
                go through ``converter`` and :meth:`adapt_pretrained`.

        Raises:
            CheckpointLoadError: the file cannot be read safely or holds no weights.
            CheckpointMismatchError: the weights belong to another architecture
                (the message names the family and arch they fit, when one does).
        """
        ckpt = load_checkpoint_file(filename)
        state = self.convert_checkpoint(ckpt, source=filename)
        try:
            load_state_dict_checked(self, state, source=filename)
        except CheckpointMismatchError as err:
            raise CheckpointMismatchError(mismatch_message(ckpt, self, filename, err)) from None

    def convert_checkpoint(self, ckpt, source: str = 'checkpoint') -> dict:
        """An official or converted checkpoint object -> this backbone's state dict (no loading).

        Args:
            ckpt: what the checkpoint file holds.
            source: where it came from, for messages.
        """
        converter = type(self).converter
        try:
            state = converter(ckpt) if converter else unwrap_state_dict(ckpt)
        except CheckpointMismatchError:
            raise
        except (TypeError, ValueError, KeyError) as err:
            raise CheckpointLoadError(f'{source}: {err}') from None
        return self.adapt_pretrained(state, source)

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
        """Layer id of a backbone parameter for layer-wise learning-rate decay.

        Used by ``mmhybrid.LayerDecayOptimizerConstructor``: 0 is the stem,
        ``num_layers`` the deepest backbone layer, ``num_layers + 1`` the heads'
        rate (also for the output norms, new layers). The generic rule, read from
        :meth:`stem_modules` and :meth:`stage_modules`; a family may replace it with
        its official one:

        * 'stage_wise': stage i -> ``min(i + 1, num_layers)``;
        * 'layer_wise': the units of all stages in forward order (the items of each
          stage's block lists and its other sub-modules, e.g. a downsampling layer)
          spread evenly over ``1..num_layers``; a parameter held by a stage itself
          (a class token) goes with the stage's first unit.

        Args:
            name: parameter name inside the backbone (no ``backbone.`` prefix).
            num_layers: number of layer ids above the stem.
            decay_type: 'layer_wise' or 'stage_wise'.
        """
        if decay_type not in ('layer_wise', 'stage_wise'):
            raise ValueError(f"decay_type must be 'layer_wise' or 'stage_wise', got {decay_type!r}.")
        ids = self._layer_ids(num_layers, decay_type)
        if name not in ids:
            raise ValueError(f'No layer id for {type(self).__name__} parameter {name!r}.')
        return ids[name]

    def _layer_ids(self, num_layers: int, decay_type: str) -> Dict[str, int]:
        names = {p: n for n, p in self.named_parameters(remove_duplicate=False)}
        ids = {n: num_layers + 1 for n in names.values()}   # not in stem or stages: new layers

        def assign(module: nn.Module, layer_id: int, recurse: bool = True) -> None:
            for p in module.parameters(recurse=recurse):
                if names[p] not in assigned:
                    ids[names[p]] = layer_id
                    assigned.add(names[p])

        assigned = set()
        for m in self.stem_modules():
            assign(m, 0)
        stages = self.stage_modules()
        units = []   # (stage index, module, whether only its own parameters count)
        for s, stage in enumerate(stages):
            units.append((s, stage, False))   # a stage's own parameters (class token), with its first unit
            for child in stage.children():
                expand = isinstance(child, (nn.ModuleList, nn.Sequential))
                units.extend((s, unit, True) for unit in (child if expand else [child]))
        blocks = [u for u in units if u[2]]
        for s, module, is_unit in units:
            if decay_type == 'stage_wise':
                layer_id = min(s + 1, num_layers)
            else:
                first = module if is_unit else next((u[1] for u in blocks if u[0] == s), None)
                k = next((j for j, u in enumerate(blocks) if u[1] is first), 0)
                layer_id = 1 + k * (num_layers - 1) // max(1, len(blocks) - 1) if num_layers > 1 else 1
            assign(module, layer_id, recurse=is_unit)
        return ids

    def keep_new_weights(self, state: dict, prefix: str, what: str, source: str) -> dict:
        """Complete ``state`` with this backbone's own values for the layers under ``prefix``.

        For layers the family adds to the official network (official files have no
        weights for them): they keep their initial values, said once in the log; a
        checkpoint that has them (a dense one trained here) loads them.

        Args:
            state: converted weights.
            prefix: state-dict prefix of the new layers, e.g. ``'out_norms.'``.
            what: what they are, for the log line.
            source: the checkpoint, for the log line.
        """
        new = {k: v for k, v in self.state_dict().items() if k.startswith(prefix) and k not in state}
        if new:
            print_log(f'{source}: {what} ({prefix}*) not in the checkpoint: they keep their initial values.',
                      logger='current')
        return {**state, **new}

    def adapt_pretrained(self, state: dict, source: str) -> dict:
        """Family hook between conversion and the strict load: validate or complete ``state``.

        Args:
            state: converted weights.
            source: the file they came from, for messages.

        Returns:
            The state dict to load (by default ``state`` unchanged).
        """
        return state
