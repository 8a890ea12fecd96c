"""tools/misc/preflight.py, the check before a cluster job, and the dataset-class check it shares with
tools/train.py and tools/test.py. Every config passing the preflight's gradient check is tested in
tests/test_configs.py (test_every_trainable_parameter_gets_a_gradient)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
from mmengine.config import Config

from mmhybrid.analysis.preflight import Check, training_shape
from mmhybrid.utils import DatasetClassesError, check_dataset_classes

ROOT = Path(__file__).resolve().parents[1]
PREFLIGHT = ROOT / 'tools/misc/preflight.py'
FIXTURE = ROOT / 'tests/data/configs/retinanet_conv2former_t_coco_unused_out_norm.py'
TOY_RETINANET = ROOT / 'configs/quickstart/retinanet_crossformer_toy.py'


@pytest.fixture(scope='module')
def toy_workspace(tmp_path_factory):
    ws = tmp_path_factory.mktemp('preflight')
    subprocess.run([sys.executable, str(ROOT / 'tools/misc/make_toy_datasets.py'), '--out', str(ws / 'data'),
                    '--train', '8', '--val', '4'], check=True, capture_output=True)
    return ws


def run_tool(args, cwd, tool=PREFLIGHT):
    proc = subprocess.run([sys.executable, str(tool), *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          timeout=300)
    return proc.returncode, proc.stdout, proc.stderr


def lines(stdout, status):
    return [line for line in stdout.splitlines() if line.startswith(f'[{status:>4}]')]


def test_preflight_fails_the_unused_output_norm_naming_it(tmp_path):
    code, out, err = run_tool([FIXTURE, '--tiny'], tmp_path)
    assert code == 1, out + err
    failed = lines(out, 'FAIL')
    assert len(failed) == 1 and failed[0].startswith('[FAIL] gradients: 2 trainable parameters got no gradient')
    assert 'backbone.out_norms.0.{weight,bias}' in failed[0]
    assert out.rstrip().endswith('preflight: 1 failed')


def test_preflight_passes_the_quick_start_at_its_training_size_and_reports_everything(toy_workspace):
    """The toy config as written (its arch, 160 px, batch 4) in the folder that holds its data."""
    code, out, err = run_tool([TOY_RETINANET, '--gpus', '2', '--steps', '2'], toy_workspace)
    assert code == 0, out + err
    assert not lines(out, 'FAIL') and out.rstrip().endswith('preflight: passed')
    assert '[  ok] channels: model.neck.in_channels = [32, 64, 128, 256] matches' in out
    assert '[  ok] dataset: every file the dataloaders read exists' in out
    assert '[info] batch: 4 images per GPU x 2 GPUs = 8 per iteration' in out
    # the toy schedule is written for 4 images per iteration: --auto-scale-lr doubles the lr
    assert '[warn] lr: 0.002 is written for 4 images per iteration, not 8: with --auto-scale-lr it becomes ' \
        '0.004 (x 8/4)' in out
    assert '[  ok] gradients: every trainable parameter' in out and '(4 x 3 x 160 x 160 on cpu, random weights)' in out
    assert [line.split(':')[0] for line in lines(out, 'info')][-2:] == ['[info] memory', '[info] time']
    assert 'GiB (peak RSS increase) for one step' in out and 's per iteration on this machine (median of 1' in out


def test_preflight_names_a_neck_that_reads_other_channels(tmp_path):
    code, out, _ = run_tool([ROOT / 'configs/retinanet_crossformer_s_coco.py', '--tiny', '--cfg-options',
                             'model.neck.in_channels=[64,128,256,512]'], tmp_path)
    assert code == 1
    assert lines(out, 'FAIL') == [
        "[FAIL] channels: the backbone returns [96, 192, 384, 768] channels (out_indices all) but "
        "model.neck.in_channels = [64, 128, 256, 512]: set model.neck.in_channels=[96, 192, 384, 768]"]


def test_preflight_reports_missing_data_and_weights_where_the_config_expects_them(tmp_path):
    code, out, _ = run_tool([ROOT / 'configs/upernet_cvt_13_ade20k.py', '--tiny', '--gpus', '8'], tmp_path)
    assert code == 0   # the login node may not see the cluster's storage: warnings, not failures
    warned = '\n'.join(lines(out, 'warn'))
    assert 'data/ade/ADEChallengeData2016/images/training not found (set by train_dataloader.dataset.' in warned
    assert 'checkpoints/cvt-13.pth (model.backbone.init_cfg.checkpoint) not found' in warned
    assert '[info] lr: 6e-05 (no auto_scale_lr.base_batch_size: --auto-scale-lr does not apply)' in out
    # UperNet's heads have SyncBN (mmseg's norm_cfg); the backbone's BatchNorms are frozen (norm_eval)
    assert '[info] batchnorm: 28 BatchNorm layers (13 SyncBatchNorm); 13 train their statistics (auxiliary_head, ' \
        'decode_head), synchronised across GPUs' in out


def _coco_with_other_classes(toy_workspace):
    """The COCO RetinaNet config pointed at the toy data, whose five categories are not COCO's."""
    return ['--cfg-options', 'model.backbone.init_cfg=None',
            'train_dataloader.dataset.data_root=data/toy_coco/',
            'train_dataloader.dataset.ann_file=annotations/instances_train.json',
            'train_dataloader.dataset.data_prefix.img=train/',
            'val_dataloader.dataset.data_root=data/toy_coco/',
            'val_dataloader.dataset.ann_file=annotations/instances_val.json',
            'val_dataloader.dataset.data_prefix.img=val/',
            'val_evaluator.ann_file=data/toy_coco/annotations/instances_val.json',
            'test_dataloader.dataset.data_root=data/toy_coco/',
            'test_dataloader.dataset.ann_file=annotations/instances_val.json',
            'test_dataloader.dataset.data_prefix.img=val/',
            'test_evaluator.ann_file=data/toy_coco/annotations/instances_val.json']


EXPECTED_CLASSES_LINE = (
    "data/toy_coco/annotations/instances_train.json: none of its 5 categories ('circle', 'square', 'triangle', "
    "'star', 'cross') is among the config's 80 classes ('person', 'bicycle',")


@pytest.mark.parametrize('tool', ['train.py', 'test.py', 'preflight.py'])
def test_a_dataset_of_other_categories_stops_in_one_line_naming_both_and_the_fix(toy_workspace, tool):
    """mmdet would drop every annotation and image, then fail deep in mmengine ('need at least one array
    to concatenate'); each tool instead names the categories, the classes and the two settings."""
    config = ROOT / 'configs/retinanet_crossformer_s_coco.py'
    options = _coco_with_other_classes(toy_workspace)
    if tool == 'preflight.py':
        code, out, err = run_tool([config, '--tiny', *options], toy_workspace)
        assert code == 1
        message, = [line for line in lines(out, 'FAIL')]
        assert message.startswith('[FAIL] dataset: ' + EXPECTED_CLASSES_LINE)
    else:
        args = [config] + (['missing.pth'] if tool == 'test.py' else []) + options
        checkpoint = toy_workspace / 'missing.pth'
        checkpoint.write_bytes(b'')   # test.py checks the file exists; the dataset check comes first
        code, out, err = run_tool(args, toy_workspace, tool=ROOT / 'tools' / tool)
        assert code == 2, err[-2000:]
        message, = err.strip().splitlines()
        expected = EXPECTED_CLASSES_LINE.replace('instances_train', 'instances_val') if tool == 'test.py' \
            else EXPECTED_CLASSES_LINE
        assert message.startswith(f'{tool}: error: {expected}')
    assert "Set metainfo=dict(classes=(...)) to your categories on every split (train_dataloader.dataset, " \
        "val_dataloader.dataset, test_dataloader.dataset), and the head's num_classes to their number (5)" in message


def _coco_file(path: Path, images: int, with_class: int) -> Path:
    """A COCO-format file of ``images`` 64 px images; the first ``with_class`` hold a 'cat', all a 'dog'."""
    data = dict(images=[dict(id=i, file_name=f'{i}.jpg', width=64, height=64) for i in range(images)],
                categories=[dict(id=1, name='cat'), dict(id=2, name='dog')],
                annotations=[dict(id=2 * i + k, image_id=i, category_id=k + 1, bbox=[0, 0, 8, 8], area=64,
                                  iscrowd=0) for i in range(images) for k in ((0, 1) if i < with_class else (1, ))])
    path.write_text(json.dumps(data))
    return path


def _train_cfg(ann_file: Path, classes) -> Config:
    return Config(dict(default_scope='mmdet', train_dataloader=dict(dataset=dict(
        type='CocoDataset', ann_file=str(ann_file), metainfo=dict(classes=classes),
        filter_cfg=dict(filter_empty_gt=True, min_size=32)))))


def test_a_training_set_keeping_fewer_than_half_of_its_images_gets_a_warning_with_the_count(tmp_path):
    ann = _coco_file(tmp_path / 'ann.json', images=10, with_class=3)
    warning, = check_dataset_classes(_train_cfg(ann, ('cat', )), ['train_dataloader'])
    assert warning.startswith('train_dataloader.dataset: 3 of 10 images (30%) have an annotation of the '
                              "config's classes and are trained on; the other 7 are dropped")
    assert check_dataset_classes(_train_cfg(ann, ('cat', 'dog')), ['train_dataloader']) == []
    assert check_dataset_classes(_train_cfg(_coco_file(tmp_path / 'half.json', 10, 5), ('cat', )),
                                 ['train_dataloader']) == []   # half is kept: no warning
    with pytest.raises(DatasetClassesError, match=r"none of its 2 categories \('cat', 'dog'\) is among the "
                       r"config's 1 classes \('bird'\)"):
        check_dataset_classes(_train_cfg(ann, ('bird', )), ['train_dataloader'])


def test_training_shape_is_the_largest_padded_training_image():
    def shape(name):
        return training_shape(Config.fromfile(str(ROOT / 'configs' / name)))
    assert shape('retinanet_crossformer_s_coco.py') == (800, 1344)        # Resize (1333, 800), pad 32
    assert shape('mask_rcnn_conv2former_t_coco.py') == (800, 1344)        # 3x multi-scale: up to 800 x 1333
    assert shape('upernet_crossformer_s_ade20k.py') == (512, 512)         # mmseg: the crop
    assert shape('quickstart/retinanet_crossformer_toy.py') == (160, 160)


def test_check_lines_have_one_format():
    assert Check('FAIL', 'gradients', 'x').line() == '[FAIL] gradients: x'
    assert Check('ok', 'lr', 'y').line() == '[  ok] lr: y'
