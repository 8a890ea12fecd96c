"""Quick start: train RetinaNet + CrossFormer on the embedded toy dataset, on CPU.

    make demo                         (or: python tools/demo.py)
    python tools/demo.py --config configs/quickstart/mask_rcnn_crossformer_toy.py

Steps, each the same code path as a real COCO run:

1. writes the toy datasets (tools/misc/make_toy_datasets.py) unless they exist;
2. trains with ``tools/train.py`` (mmengine Runner, progress log every 25 iterations),
   which evaluates with the COCO metric at the end;
3. prints the bbox mAP (0.50:0.95) of the toy validation set;
4. draws the trained detector's confident predictions (score >= 0.5: boxes, class
   names and scores) on validation images into ``WORK_DIR/predictions.png``.
"""
import argparse
import glob
import json
import os
import os.path as osp
import subprocess
import sys
import time

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--config', default='configs/quickstart/retinanet_crossformer_toy.py')
    parser.add_argument('--work-dir', default='work_dirs/quickstart')
    parser.add_argument('--data', default='data', help='folder holding toy_coco/ (made if missing)')
    parser.add_argument('--num-images', type=int, default=6, help='validation images in the picture')
    parser.add_argument('--score-thr', type=float, default=0.5,
                        help='draw only predictions at least this confident (each with its score)')
    return parser.parse_args(argv)


def last_metrics(work_dir: str) -> dict:
    """The last validation record mmengine wrote to ``*/vis_data/scalars.json``."""
    logs = sorted(glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json')), key=osp.getmtime)
    if not logs:
        raise FileNotFoundError(f'no training log under {work_dir}')
    records = [json.loads(line) for line in open(logs[-1]) if line.strip()]
    evals = [r for r in records if any(k.startswith('coco/') for k in r)]
    if not evals:
        raise RuntimeError(f'{logs[-1]} has no evaluation record')
    return evals[-1]


def draw_predictions(config: str, checkpoint: str, images: list, out_file: str, score_thr: float = 0.5) -> None:
    """Run the trained detector on ``images`` and save a grid of them with the predictions scoring at
    least ``score_thr`` (boxes, masks if any, class names and scores)."""
    import mmcv
    import numpy as np
    from mmdet.apis import inference_detector, init_detector
    from mmdet.registry import VISUALIZERS

    import mmhybrid  # noqa: F401  (mmengine then reads checkpoints with mmhybrid's weights-only loader)
    model = init_detector(config, checkpoint, device='cpu')
    visualizer = VISUALIZERS.build(dict(type='DetLocalVisualizer', name='quickstart', line_width=1))
    visualizer.dataset_meta = model.dataset_meta
    tiles = []
    for path in images:
        image = mmcv.imread(path, channel_order='rgb')
        result = inference_detector(model, path)
        big = mmcv.imrescale(image, 2.0, interpolation='nearest')
        result.pred_instances.bboxes *= 2.0
        visualizer.add_datasample('pred', big, result, draw_gt=False, pred_score_thr=score_thr, show=False)
        tiles.append(visualizer.get_image())
    cols = min(3, len(tiles))
    tiles += [np.zeros_like(tiles[0])] * (-len(tiles) % cols)
    rows = [np.concatenate(tiles[i:i + cols], axis=1) for i in range(0, len(tiles), cols)]
    mmcv.imwrite(np.concatenate(rows, axis=0)[..., ::-1], out_file)


def main(argv=None) -> int:
    args = parse_args(argv)
    os.chdir(ROOT)
    started = time.time()
    if not osp.exists(osp.join(args.data, 'toy_coco', 'annotations', 'instances_val.json')):
        subprocess.run([sys.executable, 'tools/misc/make_toy_datasets.py', '--out', args.data], check=True)
    train = subprocess.run([sys.executable, 'tools/train.py', args.config, '--work-dir', args.work_dir])
    if train.returncode:
        return train.returncode
    metrics = last_metrics(args.work_dir)
    checkpoint = open(osp.join(args.work_dir, 'last_checkpoint')).read().strip()
    images = sorted(glob.glob(osp.join(args.data, 'toy_coco', 'val', '*.jpg')))[:args.num_images]
    picture = osp.join(args.work_dir, 'predictions.png')
    draw_predictions(args.config, checkpoint, images, picture, args.score_thr)
    minutes = (time.time() - started) / 60
    print(f'\nquick start finished in {minutes:.1f} min')
    for key in sorted(k for k in metrics if k.startswith('coco/') and k.endswith('mAP')):
        kind = key.split('/')[1].replace('_mAP', '')
        print(f'{kind} mAP (0.50:0.95) on the toy validation set: {metrics[key]:.3f}')
    print(f'predictions on {len(images)} validation images: {picture}')
    print(f'checkpoint: {checkpoint} (python tools/test.py {args.config} {checkpoint})')
    return 0


if __name__ == '__main__':
    sys.exit(main())
