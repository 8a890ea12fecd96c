"""What a family declares on its class, and how a backbone takes in weights.

:class:`FamilyDeclaration` lists the class attributes that make a family: everything else
(``convert.py``, checkpoint identification, timm registration, the GPU check, the test
tables) reads them from the registry. :class:`PretrainedWeights` is the backbone's side of
the checkpoint road (:mod:`mmhybrid.checkpoints`): strict loading through the family's
converter, layers the official networks lack, and keys of earlier mmhybrid layouts.
"""
from typing import Callable, Dict, Optional, Tuple

from mmengine.logging import print_log

from ..checkpoints import convert_for, load_into


class FamilyDeclaration:
    """The class attributes a backbone family sets (see ``docs/adding_a_family.md``)."""

    #: name of the family, for messages
    family: str = 'backbone'
    #: the family's lower-case name (fixtures, ``convert.py FAMILY``); None: not a family
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


def rename_legacy_keys(module: 'PretrainedWeights', state_dict, prefix, local_metadata, strict, missing_keys,
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


class PretrainedWeights:
    """Loading weights into a backbone: mixed into :class:`~mmhybrid.models.base.HybridBackbone` (before
    ``nn.Module``), which calls :meth:`track_loads` while it is built."""

    def track_loads(self) -> None:
        """Rename legacy keys on every load, and note when weights arrive (``norm_eval=None``)."""
        self._weights_loaded = False
        self.register_load_state_dict_pre_hook(rename_legacy_keys)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # every loading path (init_cfg, mmengine's load_from/resume, timm, plain
        # load_state_dict) passes here: remember that the weights are no longer random
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        if any(k.startswith(prefix) for k in state_dict):
            self._weights_loaded = True

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

    def load_pretrained(self, filename: str) -> None:
        """Load an official or converted checkpoint file (path, URL or model-zoo name) strictly, through
        :func:`mmhybrid.checkpoints.load_into` (safe reader, the family's converter, :meth:`adapt_pretrained`).

        Raises:
            CheckpointLoadError: the file cannot be read safely or holds no weights.
            CheckpointMismatchError: the weights belong to another architecture (the message names the
                family and arch they fit, when one does).
        """
        load_into(self, filename)

    def convert_checkpoint(self, ckpt, source: str = 'checkpoint') -> dict:
        """An official or converted checkpoint object -> this backbone's state dict (no loading); see
        :func:`mmhybrid.checkpoints.convert_for`."""
        return convert_for(self, ckpt, source)

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
