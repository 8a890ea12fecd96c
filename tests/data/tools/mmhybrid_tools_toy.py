"""A toy regression model, dataset and metric for the tools tests.

Registered in mmengine's root registries, so a config with
``custom_imports=dict(imports=['mmhybrid_tools_toy'])`` and no ``default_scope``
trains in a second or two on CPU, while the Runner still saves what it saves for
real models (message hub with HistoryBuffers, numpy metric values, best score).
"""
import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from mmengine.evaluator import BaseMetric
from mmengine.model import BaseModel
from mmengine.registry import DATASETS, METRICS, MODELS


@MODELS.register_module()
class ToyRegressor(BaseModel):
    """Linear regression from 2 features to 1 target."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(2, 1)

    def forward(self, inputs, data_samples=None, mode='tensor'):
        """Run the model.

        Args:
            inputs (list[torch.Tensor]): Feature vectors of shape (2,).
            data_samples (list[torch.Tensor], optional): Scalar targets.
            mode (str): 'loss', 'predict' or 'tensor'.

        Returns:
            dict | list | torch.Tensor: Losses, per-sample predictions, or the
            raw output.
        """
        out = self.linear(torch.stack(inputs)).squeeze(-1)
        if mode == 'loss':
            return dict(loss=((out - torch.stack(data_samples)) ** 2).mean())
        if mode == 'predict':
            return list(out)
        return out


@DATASETS.register_module()
class ToyRegressionDataset(Dataset):
    """Samples ``x = (i, -i) / length``, target ``i / length``.

    Args:
        length (int): Number of samples.
    """

    metainfo = dict(classes=('target', ))

    def __init__(self, length=16):
        self.length = length

    def __len__(self):
        return self.length

    def __getitem__(self, index):
        value = index / self.length
        return dict(inputs=torch.tensor([value, -value]),
                    data_samples=torch.tensor(value))


@METRICS.register_module()
class ToyMAE(BaseMetric):
    """Mean absolute error, returned as a numpy scalar like mmseg's metrics."""

    default_prefix = 'toy'

    def process(self, data_batch, data_samples):
        """Store the absolute errors of one batch.

        Args:
            data_batch (dict): The batch, with the targets in ``data_samples``.
            data_samples (list[torch.Tensor]): The predictions.
        """
        for pred, target in zip(data_samples, data_batch['data_samples']):
            self.results.append(abs(float(pred) - float(target)))

    def compute_metrics(self, results):
        """Average the errors.

        Args:
            results (list[float]): Absolute errors of all samples.

        Returns:
            dict: ``mae`` as a numpy float32.
        """
        return dict(mae=np.float32(np.mean(results)))
