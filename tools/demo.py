"""Quick start: build RetinaNet + CrossFormer-S from the COCO config and run it on an image.

    make demo        (or: python tools/demo.py [CONFIG])

It needs no dataset and no download: the model is randomly initialised (the
config's ImageNet checkpoint is switched off), so the point is the pipeline -
config inheritance from mmdet, the mmhybrid backbone in mmdet's detector, mmcv's
compiled ops in post-processing - and the shapes and time of each stage.
"""
import argparse
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), '..')))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config', nargs='?', default='configs/retinanet_crossformer_s_coco.py')
    parser.add_argument('--shape', type=int, nargs=2, default=(480, 640), help='image height width')
    args = parser.parse_args()

    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    import mmhybrid  # noqa: F401
    cfg = Config.fromfile(args.config)
    cfg.model.backbone.init_cfg = None
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    from mmdet.apis import inference_detector
    from mmdet.registry import MODELS
    model = MODELS.build(cfg.model)
    model.cfg = cfg
    model.eval()

    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, size=(*args.shape, 3), dtype=np.uint8)
    with torch.no_grad():
        x = torch.from_numpy(image).permute(2, 0, 1)[None].float()
        feats = model.backbone(x)
        t0 = time.perf_counter()
        result = inference_detector(model, image)
        elapsed = time.perf_counter() - t0
    print(f'config: {args.config}')
    print(f'backbone: {type(model.backbone).__name__} ({model.backbone.arch_name}), '
          f'{sum(p.numel() for p in model.backbone.parameters()) / 1e6:.3f} M params')
    for stride, f in zip(model.backbone.out_strides, feats):
        print(f'  stride {stride:2d}: {tuple(f.shape)}')
    print(f'detector inference on a {args.shape[0]}x{args.shape[1]} image: {elapsed * 1000:.0f} ms, '
          f'{len(result.pred_instances)} boxes (random weights)')


if __name__ == '__main__':
    main()
