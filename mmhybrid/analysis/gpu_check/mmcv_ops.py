"""Section ``ops``: mmcv's compiled ops that the configs run (nms, batched_nms, roi_align with its
backward, sigmoid_focal_loss with its backward) on the device against their CPU kernels, and
every result against a plain PyTorch / torchvision reference; then each op with bf16 inputs
(refused, or how far from fp32), which is why ``--amp`` runs them in fp32
(:mod:`mmhybrid.engine.fp32_ops`)."""
import json
import traceback
from typing import Callable, Dict, List, Sequence, Tuple

import torch

from ..measure import is_cuda
from .common import GpuCheckOptions, error_text

#: the largest relative difference from the reference an op may show and pass
TOLERANCE = 1e-4
#: a run of an op: (device, dtype) -> outputs to compare
OpRun = Callable[[str, torch.dtype], List[torch.Tensor]]


def random_boxes(n: int, size: float, gen: torch.Generator) -> torch.Tensor:
    """``n`` random boxes (x1, y1, x2, y2) with corners in ``[0, size)`` and sides of 2 to
    ``size / 4 + 2``."""
    xy = torch.rand(n, 2, generator=gen) * size
    wh = torch.rand(n, 2, generator=gen) * size / 4 + 2
    return torch.cat([xy, xy + wh], 1)


def focal_reference(pred: torch.Tensor, target: torch.Tensor, gamma: float = 2.0,
                    alpha: float = 0.25) -> torch.Tensor:
    """Sigmoid focal loss (summed) in plain PyTorch: the formula of RetinaNet's paper, one-hot
    targets from class indices (index ``num_classes`` = background).

    Args:
        pred: logits, ``(N, num_classes)``.
        target: class indices, ``(N,)``.
        gamma: the focusing exponent.
        alpha: the weight of the positives.
    """
    onehot = torch.nn.functional.one_hot(target, pred.shape[1] + 1)[:, :-1].to(pred.dtype)
    p = pred.sigmoid()
    pt = p * onehot + (1 - p) * (1 - onehot)
    weight = (alpha * onehot + (1 - alpha) * (1 - onehot)) * (1 - pt).pow(gamma)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(pred, onehot, reduction='none')
    return (loss * weight).sum()


def _nms_cases(tiny: bool, gen: torch.Generator) -> Dict[str, Tuple[OpRun, Callable]]:
    import torchvision
    from mmcv.ops import batched_nms, nms
    n = 300 if tiny else 3000
    boxes, scores = random_boxes(n, 800.0, gen), torch.rand(n, generator=gen)
    classes = torch.randint(0, 10, (n,), generator=gen)

    def run_nms(device, dtype):
        return [nms(boxes.to(device, dtype), scores.to(device, dtype), 0.5)[1]]

    def run_batched_nms(device, dtype):
        return [batched_nms(boxes.to(device, dtype), scores.to(device, dtype), classes.to(device),
                            dict(type='nms', iou_threshold=0.5))[1]]

    return {'nms': (run_nms, lambda: [torchvision.ops.nms(boxes, scores, 0.5)]),
            'batched_nms': (run_batched_nms,
                            lambda: [torchvision.ops.batched_nms(boxes, scores, classes, 0.5)])}


def _roi_align_case(tiny: bool, gen: torch.Generator) -> Tuple[OpRun, Callable]:
    import torchvision
    from mmcv.ops import roi_align
    feat = torch.randn(2, 16 if tiny else 256, 50, 76, generator=gen)
    k = 64 if tiny else 512
    rois = torch.cat([torch.randint(0, 2, (k, 1), generator=gen).float(),
                      random_boxes(k, 300.0, gen)], 1)
    grad_out = torch.randn(k, feat.shape[1], 7, 7, generator=gen)

    def run(device, dtype):
        x = feat.to(device, dtype).requires_grad_()
        out = roi_align(x, rois.to(device, dtype), (7, 7), 1 / 16, 0, 'avg', True)
        out.backward(grad_out.to(device, dtype))
        return [out, x.grad]

    def reference():
        x = feat.clone().requires_grad_()
        out = torchvision.ops.roi_align(x, rois, (7, 7), 1 / 16, 0, True)
        out.backward(grad_out)
        return [out, x.grad]

    return run, reference


def _focal_case(tiny: bool, gen: torch.Generator) -> Tuple[OpRun, Callable]:
    from mmcv.ops import sigmoid_focal_loss
    logits = torch.randn(2000 if tiny else 20000, 80, generator=gen)
    labels = torch.randint(0, 81, (logits.shape[0],), generator=gen)

    def run(device, dtype):
        x = logits.to(device, dtype).requires_grad_()
        loss = sigmoid_focal_loss(x, labels.to(device), 2.0, 0.25, None, 'sum')
        loss.backward()
        return [loss, x.grad]

    def reference():
        x = logits.clone().requires_grad_()
        loss = focal_reference(x, labels)
        loss.backward()
        return [loss, x.grad]

    return run, reference


def op_cases(tiny: bool) -> Dict[str, Tuple[OpRun, Callable[[], List[torch.Tensor]]]]:
    """name -> (run of the op on a device in a dtype, giving the outputs to compare (gradients
    included); its reference outputs on the CPU in fp32).

    Args:
        tiny: toy sizes.
    """
    gen = torch.Generator().manual_seed(0)
    cases = _nms_cases(tiny, gen)
    cases['roi_align (+backward)'] = _roi_align_case(tiny, gen)
    cases['sigmoid_focal_loss (+backward)'] = _focal_case(tiny, gen)
    return cases


def compare(outs: Sequence[torch.Tensor], refs: Sequence[torch.Tensor]) -> float:
    """Max relative difference of float outputs, or 0/1 for index outputs (equal or not);
    ``inf`` where shapes differ."""
    worst = 0.0
    for a, b in zip(outs, refs):
        a, b = a.detach().cpu(), b.detach().cpu()
        if a.shape != b.shape:
            return float('inf')
        if not a.is_floating_point():
            worst = max(worst, 0.0 if torch.equal(a, b) else 1.0)
            continue
        a, b = a.double(), b.double()
        worst = max(worst, ((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item())
    return worst


def bf16_behaviour(run: OpRun, device: str, ref: Sequence[torch.Tensor]) -> str:
    """Whether the op takes bf16 inputs on ``device``, and how far its result is from the fp32
    reference."""
    try:
        return f'runs; {compare(run(device, torch.bfloat16), ref):.1e} from the fp32 reference'
    except (RuntimeError, NotImplementedError) as err:
        return 'refused: ' + error_text(err)[:120]


def _run_on_cpu(run: OpRun, row: dict):
    """The op's CPU outputs, or None where mmcv has no CPU kernel (the focal loss: mmdet runs
    its PyTorch version there), which ``row`` then says."""
    try:
        return run('cpu', torch.float32)
    except RuntimeError as err:
        if 'implementation for device cpu not found' not in str(err):
            raise
        row['cpu'] = 'no CPU kernel (mmdet runs its PyTorch version there)'
        return None


def check_op(name: str, run: OpRun, reference: Callable, device: str) -> dict:
    """One op's row: its CPU kernel and the device's against the reference and each other, then
    its bf16 behaviour; ``ok`` when every difference is within :data:`TOLERANCE`.

    Args:
        name: the op's row name.
        run: see :func:`op_cases`.
        reference: see :func:`op_cases`.
        device: the device checked.
    """
    row = dict(op=name, ok=True)
    try:
        ref = reference()
        cpu = _run_on_cpu(run, row)
        if cpu is not None:
            row['cpu_vs_reference'] = compare(cpu, ref)
        dev = cpu
        if is_cuda(device):
            dev = run(device, torch.float32)
            row['device_vs_reference'] = compare(dev, ref)
            if cpu is not None:
                row['device_vs_cpu'] = compare(dev, cpu)
        row['ok'] = all(row.get(k, 0.0) <= TOLERANCE
                        for k in ('cpu_vs_reference', 'device_vs_reference', 'device_vs_cpu'))
        row['bf16'] = '-' if dev is None else bf16_behaviour(run, device, ref)
    except Exception as err:  # noqa: BLE001  (reported, the check goes on)
        row.update(ok=False, error=error_text(err), traceback=traceback.format_exc())
    shown = {k: v for k, v in row.items() if k not in ('op', 'traceback')}
    print(f'[ops] {name}: {"ok" if row["ok"] else "FAILED"} {json.dumps(shown)}', flush=True)
    return row


def check_ops(options: GpuCheckOptions) -> List[dict]:
    """The ``ops`` section: one row per op (see :func:`check_op`).

    Args:
        options: the check's options (``device``, ``tiny``).
    """
    from mmcv.ops import get_compiling_cuda_version
    if is_cuda(options.device) and get_compiling_cuda_version() == 'not available':
        return [dict(op='all', ok=False, error='mmcv was built without CUDA ops: rebuild it with '
                     '`rm .venv/.stamp-mmcv && FORCE_CUDA=1 make install`')]
    return [check_op(name, run, reference, options.device)
            for name, (run, reference) in op_cases(options.tiny).items()]
