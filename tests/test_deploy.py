"""ONNX export (tools/deployment/export_onnx.py) and ONNX Runtime evaluation (tools/test.py FILE.onnx).

- every family's backbone: ONNX Runtime against eager within 1e-4 of each map's absmax, and at two
  input sizes from one file for the families that export with free sizes;
- whole models: the quick-start RetinaNet, Mask R-CNN and UperNet, trained briefly, exported and
  evaluated through tools/test.py as .pth and as .onnx (metrics within 0.005), and their detections
  compared box by box; Cascade Mask R-CNN and a detector with free sizes box by box;
- bad input: one line, exit status 2, no file left behind.
"""
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.registry import init_default_scope

from family_archs import SMALL_ARCH, randomize
from mmhybrid.analysis.build import build_model_from_config
from mmhybrid.analysis.preflight import tiny_config
from mmhybrid.deploy.export import ExportError, export_onnx, graph_of, load_trained_model
from mmhybrid.deploy.runtime import ONNXRuntimeDetector, OnnxSession
from mmhybrid.registry import MODELS

ROOT = Path(__file__).resolve().parents[1]
EXPORT = ROOT / 'tools/deployment/export_onnx.py'
QUICKSTART = ROOT / 'configs/quickstart'
DYNAMIC_FAMILIES = [f for f in SMALL_ARCH if MODELS.get(f).export_fixed_size is None]


@pytest.fixture(scope='module')
def workspace(tmp_path_factory):
    ws = tmp_path_factory.mktemp('deploy')
    subprocess.run([sys.executable, str(ROOT / 'tools/misc/make_toy_datasets.py'), '--out', str(ws / 'data'),
                    '--train', '48', '--val', '8'], check=True, capture_output=True)
    return ws


def run(args, cwd, timeout=600):
    proc = subprocess.run([sys.executable, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=timeout)
    return proc.returncode, proc.stdout + proc.stderr


def random_checkpoint(cfg, path: Path, seed: int = 0) -> Path:
    """The config's model with weights far from their initial values (distinct scores: no ties for NMS)."""
    torch.manual_seed(seed)
    model = build_model_from_config(cfg)
    model.init_weights()
    randomize(model, seed)
    torch.save(dict(state_dict=model.state_dict(), meta=dict()), path)
    return path


def tiny(name: str, **test_cfg) -> Config:
    """A shipped config with its family's test arch and random weights instead of ImageNet's."""
    cfg = Config.fromfile(str(ROOT / 'configs' / name))
    cfg.model.backbone.init_cfg = None
    cfg = tiny_config(cfg)
    cfg.merge_from_dict(test_cfg)
    return cfg


# ---------------------------------------------------------------------------------------
# backbones
# ---------------------------------------------------------------------------------------

def export_backbone(backbone, example, path, dynamic):
    from torch.export import Dim
    # sides in multiples of 32, as a detector's or segmentor's data preprocessor pads them
    shapes = ({0: Dim('b', min=1, max=8), 2: 32 * Dim('h', min=1, max=32), 3: 32 * Dim('w', min=1, max=32)}, ) \
        if dynamic else None
    torch.onnx.export(backbone, (example, ), dynamo=True, verbose=False, dynamic_shapes=shapes).save(str(path))
    return path


def ort_maps(path, x):
    import onnxruntime as ort
    session = ort.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    return [torch.from_numpy(v) for v in session.run(None, {session.get_inputs()[0].name: x.numpy()})]


def assert_maps_close(got, want):
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.shape == w.shape
        assert (g - w).abs().max() <= 1e-4 * w.abs().max(), float((g - w).abs().max() / w.abs().max())


@pytest.mark.parametrize('family', list(SMALL_ARCH))
def test_backbone_in_onnx_runtime_matches_eager(family, tmp_path):
    backbone = randomize(MODELS.build(dict(type=f'mmhybrid.{family}', arch=SMALL_ARCH[family], drop_path_rate=0.0)))
    backbone = backbone.eval()
    x = torch.randn(1, 3, 128, 160)
    path = export_backbone(backbone, x, tmp_path / 'backbone.onnx', dynamic=False)
    with torch.no_grad():
        assert_maps_close(ort_maps(path, x), list(backbone(x)))


@pytest.mark.parametrize('family', DYNAMIC_FAMILIES)
def test_one_dynamic_backbone_file_takes_two_batches_and_sizes(family, tmp_path):
    backbone = randomize(MODELS.build(dict(type=f'mmhybrid.{family}', arch=SMALL_ARCH[family], drop_path_rate=0.0)))
    backbone = backbone.eval()
    path = export_backbone(backbone, torch.randn(2, 3, 128, 160), tmp_path / 'backbone.onnx', dynamic=True)
    for shape in [(1, 3, 96, 224), (3, 3, 192, 128)]:
        x = torch.randn(shape)
        with torch.no_grad():
            assert_maps_close(ort_maps(path, x), list(backbone(x)))


def test_families_with_shape_dependent_grouping_are_the_fixed_size_ones():
    assert sorted(set(SMALL_ARCH) - set(DYNAMIC_FAMILIES)) == ['CrossFormer', 'CrossFormerPP']


# ---------------------------------------------------------------------------------------
# whole models
# ---------------------------------------------------------------------------------------

def val_batch(cfg, count: int = 4):
    """The first ``count`` images of the config's validation set, as the test loop feeds them."""
    init_default_scope(cfg.default_scope)
    from mmengine.registry import DATASETS
    dataset = DATASETS.build(cfg.val_dataloader.dataset)
    return pseudo_collate([dataset[i] for i in range(count)])


def matches(got: dict, want: dict):
    """Which of ``got``'s detections (``bboxes``, ``scores``, ``labels``, maybe ``masks``) are one of
    ``want``'s: same class, IoU > 0.99, score within 1e-4 (and the same mask pixels but 0.1%)."""
    from torchvision.ops import box_iou
    iou = box_iou(got['bboxes'], want['bboxes']) * (got['labels'][:, None] == want['labels'][None, :])
    best, index = iou.max(dim=1)
    same = (best > 0.99) & ((got['scores'] - want['scores'][index]).abs() < 1e-4)
    if 'masks' in want:
        same &= (got['masks'] ^ want['masks'][index]).flatten(1).float().mean(1) < 1e-3
    return same


def assert_mostly_the_same(pairs):
    """All but 2% of the detections match (candidates within float rounding of each other may swap
    places in NMS, and so change what a later box is compared with)."""
    found = torch.cat([matches(g, w) for g, w in pairs])
    assert len(found) and found.float().mean() >= 0.98, (int(found.sum()), len(found))


def assert_same_detections(cfg, checkpoint, onnx_file, count: int = 4):
    """The PyTorch model's and the file's predictions (mmdet's predict, rescaled) agree box by box."""
    model = load_trained_model(cfg, str(checkpoint))
    exported = ONNXRuntimeDetector(str(onnx_file), data_preprocessor=cfg.model.data_preprocessor)
    batch = val_batch(cfg, count)
    with torch.no_grad():
        want, got = model.test_step(batch), exported.test_step(batch)
    assert [len(g.pred_instances) for g in got] == [len(w.pred_instances) for w in want]
    assert_mostly_the_same([(g.pred_instances.to_dict(), w.pred_instances.to_dict()) for g, w in zip(got, want)])


QUICKSTARTS = {
    # config: (training options, metric, test options that keep every detection for the box-by-box check)
    'retinanet_crossformer_toy.py': (['train_cfg.max_epochs=3', 'param_scheduler.0.end=10'], 'coco/bbox_mAP',
                                     {'model.test_cfg.score_thr': 0.0}),
    'mask_rcnn_crossformer_toy.py': (['train_cfg.max_epochs=2', 'param_scheduler.0.end=10'], 'coco/segm_mAP',
                                     {'model.test_cfg.rcnn.score_thr': 0.0}),
    'upernet_crossformer_toy.py': (['train_cfg.max_iters=30', 'param_scheduler.0.end=10',
                                    'default_hooks.checkpoint.interval=30'], 'mIoU', None),
}


def metric(output: str, name: str) -> float:
    found = re.findall(rf'{re.escape(name)}: (-?\d+\.\d+)', output)
    assert found, output[-3000:]
    return float(found[-1])


@pytest.mark.slow
@pytest.mark.parametrize('config', list(QUICKSTARTS))
def test_exported_quickstart_evaluates_like_its_checkpoint(workspace, config, monkeypatch):
    """Train briefly, export, then tools/test.py on the .pth and on the .onnx: the same metric within
    0.005 (and, for the detectors, the same detections box by box)."""
    train_options, name, keep_all = QUICKSTARTS[config]
    path, work = QUICKSTART / config, workspace / config.split('_')[0]
    code, out = run([ROOT / 'tools/train.py', path, '--work-dir', work, '--cfg-options', 'train_cfg.val_interval=1000',
                     *train_options], workspace)
    assert code == 0, out[-3000:]
    checkpoint = (work / 'last_checkpoint').read_text().strip()
    onnx_file = work / 'model.onnx'
    code, out = run([EXPORT, path, checkpoint, '--out', onnx_file, '--shape', 160, 160], workspace)
    assert code == 0 and f'wrote {onnx_file}: images 1 x 3 x 160 x 160' in out, out[-3000:]
    results = []
    for tested in (checkpoint, onnx_file):
        code, out = run([ROOT / 'tools/test.py', path, tested, '--work-dir', work / 'test'], workspace)
        assert code == 0, out[-3000:]
        results.append(metric(out, name))
    assert abs(results[0] - results[1]) <= (0.005 if name != 'mIoU' else 0.5), results   # mmseg reports percent
    if keep_all is not None:
        monkeypatch.chdir(workspace)
        cfg = Config.fromfile(str(path))
        cfg.merge_from_dict(keep_all)
        export_onnx(cfg, checkpoint, str(work / 'all.onnx'), shape=(160, 160))
        assert_same_detections(cfg, checkpoint, work / 'all.onnx')
        if config.startswith('retinanet'):
            assert_readme_snippet_detects(work / 'all.onnx', workspace)


def assert_readme_snippet_detects(onnx_file: Path, workspace: Path):
    """The README's ONNX Runtime snippet (no mmdet), run on a toy image, prints what the file detects."""
    readme = (ROOT / 'README.md').read_text()
    snippet = re.search(r'## Deploy \(ONNX\).*?```python\n(.*?)```', readme, re.S).group(1)
    folder = onnx_file.parent / 'snippet'
    folder.mkdir()
    (folder / 'model.onnx').symlink_to(onnx_file)
    (folder / 'demo.jpg').symlink_to(sorted((workspace / 'data/toy_coco/val').glob('*.jpg'))[0])
    code, out = run(['-c', snippet.replace('score >= 0.3', 'score >= 0.0')], folder)
    assert code == 0, out[-2000:]
    printed = [line.split()[0] for line in out.splitlines() if line.strip()]
    assert printed and set(printed) <= {'circle', 'square', 'triangle', 'star', 'cross'}, out[-2000:]


@pytest.mark.slow
def test_exported_cascade_mask_rcnn_gives_the_same_detections_and_masks(workspace, tmp_path, monkeypatch):
    monkeypatch.chdir(workspace)
    cfg = tiny('cascade_mask_rcnn_crossformer_s_coco.py', **{'model.test_cfg.rcnn.score_thr': 0.0})
    toy = Config.fromfile(str(QUICKSTART / 'mask_rcnn_crossformer_toy.py'))
    cfg.val_dataloader, cfg.test_dataloader = toy.val_dataloader, toy.test_dataloader
    cfg.model.data_preprocessor = toy.model.data_preprocessor
    checkpoint = random_checkpoint(cfg, tmp_path / 'cascade.pth')
    export_onnx(cfg, str(checkpoint), str(tmp_path / 'cascade.onnx'), shape=(160, 160))
    assert_same_detections(cfg, checkpoint, tmp_path / 'cascade.onnx')


@pytest.mark.slow
def test_one_dynamic_detector_file_runs_two_batches_and_sizes(tmp_path):
    """A RetinaNet of a family with free sizes, exported with --dynamic: the graph's detections at two
    batch sizes and image sizes (multiples of 32) equal the eager graph's."""
    cfg = tiny('retinanet_cvt_13_coco.py', **{'model.test_cfg.score_thr': 0.0})
    checkpoint = random_checkpoint(cfg, tmp_path / 'retinanet.pth')
    result = export_onnx(cfg, str(checkpoint), str(tmp_path / 'dynamic.onnx'), shape=(128, 160), dynamic=True)
    assert result['metadata']['dynamic'] and result['metadata']['shape'] is None
    graph, session = graph_of(load_trained_model(cfg, str(checkpoint))), OnnxSession(str(tmp_path / 'dynamic.onnx'))
    for shape in [(1, 3, 96, 224), (2, 3, 192, 128)]:
        x = torch.randn(shape, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            dets, labels = graph(x)
        out = session(x)
        assert_mostly_the_same([(dict(bboxes=o[:, :4], scores=o[:, 4], labels=ol), dict(
            bboxes=d[:, :4], scores=d[:, 4], labels=dl)) for o, ol, d, dl in zip(out['dets'], out['labels'], dets, labels)])


# ---------------------------------------------------------------------------------------
# metadata and bad input
# ---------------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def retinanet_checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp('retina')
    cfg = tiny('retinanet_crossformer_s_coco.py')
    cfg.dump(str(folder / 'retinanet.py'))
    return folder / 'retinanet.py', random_checkpoint(cfg, folder / 'retinanet.pth')


def test_file_metadata_records_the_preprocessing(retinanet_checkpoint, tmp_path):
    import onnx
    config, checkpoint = retinanet_checkpoint
    code, out = run([EXPORT, config, checkpoint, '--out', tmp_path / 'r.onnx', '--shape', 64, 96], tmp_path)
    assert code == 0, out[-2000:]
    props = {p.key: p.value for p in onnx.load(str(tmp_path / 'r.onnx'), load_external_data=False).metadata_props}
    meta = json.loads(props['mmhybrid'])
    assert meta['mean'] == [123.675, 116.28, 103.53] and meta['std'] == [58.395, 57.12, 57.375]
    assert meta['bgr_to_rgb'] and meta['size_divisor'] == 32 and meta['shape'] == [64, 96]
    assert meta['outputs'] == ['dets', 'labels'] and meta['task'] == 'detection'
    assert meta['test_resize'] == dict(scale=[1333, 800], keep_ratio=True)


def assert_one_line_and_no_file(code, out, message, folder):
    assert code == 2
    errors = [line for line in out.splitlines() if line.startswith('export_onnx.py: error: ')]
    assert len(errors) == 1 and message in errors[0], out[-2000:]
    assert not list(folder.glob('*.onnx*'))


@pytest.mark.parametrize('args,message', [
    (['--shape', 100, 96], '--shape 100 96: the config pads test images to multiples of 32, so the network never '
                           'sees this size; use --shape 128 96'),
    (['--dynamic'], 'CrossFormer cannot be exported with --dynamic: its attention groups, their padding and the '
                    'position-bias tables are laid out for the map size. Export one file per input size'),
    (['--logits'], '--logits is for segmentors'),
])
def test_bad_options_get_one_line_and_leave_no_file(retinanet_checkpoint, tmp_path, args, message):
    config, checkpoint = retinanet_checkpoint
    code, out = run([EXPORT, config, checkpoint, '--out', tmp_path / 'r.onnx', *args], tmp_path)
    assert_one_line_and_no_file(code, out, message, tmp_path)


def test_checkpoint_of_another_model_is_refused_naming_it(retinanet_checkpoint, tmp_path):
    _, checkpoint = retinanet_checkpoint
    cfg = tiny('mask_rcnn_crossformer_s_coco.py')
    cfg.dump(str(tmp_path / 'mask_rcnn.py'))
    code, out = run([EXPORT, tmp_path / 'mask_rcnn.py', checkpoint, '--out', tmp_path / 'm.onnx'], tmp_path)
    assert_one_line_and_no_file(code, out, f"{checkpoint}: not a checkpoint of this config's MaskRCNN", tmp_path)
    assert 'export with the config it was trained with' in out


def test_unsupported_model_and_sliding_inference_are_refused(tmp_path):
    with pytest.raises(ExportError, match='cannot export Linear: not an mmdet detector or mmseg segmentor'):
        graph_of(torch.nn.Linear(2, 2))
    seg = tiny('upernet_conv2former_t_ade20k.py')
    with pytest.raises(ExportError, match=r"test_cfg.mode='slide': only whole-image inference is exported; set "
                                          r'--cfg-options model.test_cfg.mode=whole'):
        graph_of(build_model_from_config(seg))


def test_the_checkpoint_and_an_existing_file_are_never_overwritten(retinanet_checkpoint, tmp_path):
    config, checkpoint = retinanet_checkpoint
    before = checkpoint.read_bytes()
    code, out = run([EXPORT, config, checkpoint, '--out', checkpoint], tmp_path)
    assert code == 2 and 'is the checkpoint itself' in out and checkpoint.read_bytes() == before
    (tmp_path / 'r.onnx').write_text('mine')
    code, out = run([EXPORT, config, checkpoint, '--out', tmp_path / 'r.onnx'], tmp_path)
    assert code == 2 and 'exists: remove it, choose another --out, or pass --force' in out
    assert (tmp_path / 'r.onnx').read_text() == 'mine'


def test_a_failed_save_leaves_no_partial_file(retinanet_checkpoint, tmp_path, monkeypatch):
    config, checkpoint = retinanet_checkpoint
    real_export = torch.onnx.export

    def export_then_fail_saving(*args, **kwargs):
        program = real_export(*args, **kwargs)

        def save(path, **_):
            Path(path).write_bytes(b'half a model')
            raise OSError('disk full')
        program.save = save
        return program
    monkeypatch.setattr(torch.onnx, 'export', export_then_fail_saving)
    with pytest.raises(OSError, match='disk full'):
        export_onnx(Config.fromfile(str(config)), str(checkpoint), str(tmp_path / 'r.onnx'), shape=(64, 64))
    assert list(tmp_path.iterdir()) == []
