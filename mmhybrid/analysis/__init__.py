"""Analysis of backbones and models: FLOPs, parameters, speed, memory.

Not imported by ``import mmhybrid``. The command lines ``tools/analysis/get_flops.py``,
``tools/analysis/benchmark.py`` and ``tools/analysis/gpu_check.py`` are thin wrappers over
this package:

- :mod:`.build`: what is measured, from an explicit source: a backbone config dict
  (``--backbone``/``--backbone-cfg``) or a config file (its model, or its
  ``model.backbone``);
- :mod:`.flops`: FLOP counting (``torch.utils.flop_counter`` with the CPU attention
  kernel and the fused oneDNN convolutions), parameters, :func:`analyze_model`;
- :mod:`.measure`: timing (CUDA events on CUDA), peak memory of one step, the device's
  peak GEMM rate per precision;
- :mod:`.benchmark`: modes (forward / train, fp32 / autocast bf16) and
  :func:`run_benchmark`;
- :mod:`.report`: the text and markdown reports;
- :mod:`.gpu_check`: the GPU check (mmcv ops, every family's training step, the detectors,
  the distributed quick start), not imported here;
- :mod:`.cli`: the command-line arguments both tools share.

Example::

    from mmhybrid.analysis import build_backbone, analyze_model
    res = analyze_model(build_backbone(dict(type='CrossFormer', arch='small')), [224])
    print(res['total'] / 2e9, 'GMACs')
"""
from .benchmark import Mode, make_spec, parse_modes, run_benchmark
from .build import (backbone_cfg_from_config, build_backbone, build_model_from_config,
                    load_config, parse_cfg_literal, resolve_shape)
from .flops import analyze_model, count_flops, count_params, make_flop_counter
from .report import benchmark_table, flops_report, markdown_report

__all__ = ['Mode', 'analyze_model', 'backbone_cfg_from_config', 'benchmark_table',
           'build_backbone', 'build_model_from_config', 'count_flops', 'count_params',
           'flops_report', 'load_config', 'make_flop_counter', 'make_spec',
           'markdown_report', 'parse_cfg_literal', 'parse_modes', 'resolve_shape',
           'run_benchmark']
