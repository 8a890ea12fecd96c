"""A hook for the distributed tests: each rank saves its model's parameters after training.

Registered in mmengine's root HOOKS, so a config with ``custom_imports=dict(imports=['mmhybrid',
'mmhybrid_ddp_probe'])`` and ``custom_hooks=[dict(type='SaveRankParamsHook')]`` writes
``<work_dir>/params_rank<RANK>.pt`` (parameters of the model inside the DDP wrapper, and the
world size) on every rank, where the tests compare them.
"""
import os.path as osp

import torch
from mmengine.dist import get_rank, get_world_size
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS


@HOOKS.register_module()
class SaveRankParamsHook(Hook):
    """Save this rank's parameters, iteration and world size at the end of training."""

    priority = 'VERY_LOW'

    def after_train(self, runner) -> None:
        """Write ``params_rank<rank>.pt`` into the work dir.

        Args:
            runner (mmengine.runner.Runner): The runner.
        """
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        params = {name: p.detach().cpu().clone() for name, p in model.named_parameters()}
        torch.save(dict(params=params, iter=runner.iter, world_size=get_world_size(),
                        wrapper=type(runner.model).__name__),
                   osp.join(runner.work_dir, f'params_rank{get_rank()}.pt'))
