"""The GPU check: mmcv's CUDA ops, every backbone family's training step, the detectors'
optimizer steps, an NCCL launch and the quick start, in one run, with a markdown summary
(``tools/analysis/gpu_check.py`` is its command line).

Sections (:data:`SECTIONS`), one module each:

1. ``ops`` (:mod:`.mmcv_ops`): mmcv's compiled ops against their CPU kernels and plain
   PyTorch / torchvision references, and their bf16 behaviour;
2. ``backbones`` (:mod:`.backbones`): each registered family's training step in fp32 and bf16
   (rows from the families' ``benchmark`` declarations), next to the official implementations
   and timm's peers, with the :class:`Targets` met or missed;
3. ``detectors`` (:mod:`.detectors`): optimizer steps of RetinaNet, Mask R-CNN and UperNet with
   CrossFormer-S, as ``tools/train.py [--amp]`` builds them;
4. ``dist`` (:mod:`.dist`): the quick start through ``tools/dist_train.sh CONFIG 1``.

:func:`run_gpu_check` runs them and writes ``summary.md`` (:mod:`.summary`) and
``results.json``. The check runs from a checkout: the configs and tools it uses are files of
the repository.

Example::

    from mmhybrid.analysis.gpu_check import GpuCheckOptions, run_gpu_check
    status = run_gpu_check(GpuCheckOptions(device='cpu', tiny=True, out='/tmp/gpu_check'))
"""
from .backbones import PEERS, backbone_targets, family_rows
from .common import SECTIONS, GpuCheckOptions, Targets
from .detectors import DETECTORS
from .mmcv_ops import compare, focal_reference
from .run import run_gpu_check, run_sections
from .summary import failed, summary

__all__ = ['DETECTORS', 'PEERS', 'SECTIONS', 'GpuCheckOptions', 'Targets', 'backbone_targets',
           'compare', 'failed', 'family_rows', 'focal_reference', 'run_gpu_check', 'run_sections',
           'summary']
