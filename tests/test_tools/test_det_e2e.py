"""tools/ end to end on the detection distillation configs and generated COCO data.

For a Faster R-CNN (ReKD), a Mask R-CNN (KD, with mask distillation switched on),
a RetinaNet (DIST), an RTMDet (KD, RTMDet-l -> tiny) and a GFL (LD, R101 -> R18)
config: a teacher of the config's own teacher architecture (6 classes) is
trained for two iterations here and saved; ``tools/train.py`` distils with it
(strict teacher loading) for one epoch of 4 iterations (RTMDet: two epochs, with
its student-only EMA, the pipeline switch and the distillation stop moved to
epoch 2); ``tools/test.py`` evaluates with the COCO bbox (and segm) metrics;
the student extracted by ``extract_student.py`` (RTMDet: its EMA weights) is
tested by mmdet's own ``tools/test.py`` with the plain student config and gives
the same metrics and predictions.

Sizes are overridden for 2 shared CPU cores: 64 x 64 inputs, 8 training and 4
validation images, 64 sampled RoIs per image from 100 proposals, one thread.
"""
import copy
import os.path as osp
import pickle
import re

import mmdet
import pytest
import torch
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.optim import OptimWrapper
from mmengine.registry import init_default_scope

from mmkd.datasets import det_overrides
from mmkd.recipes import no_pretrained, write_config
from mmkd.registry import MODELS
from mmkd.testing import ROOT, run_tool

MMDET_TEST = osp.join(osp.dirname(mmdet.__file__), '.mim', 'tools', 'test.py')
ONE_THREAD = dict(OMP_NUM_THREADS='1', MKL_NUM_THREADS='1')
CASES = {
    # config: (the student's mmdet config, distillation key, metrics)
    'configs/rekd/faster-rcnn_r101_r50_coco.py':
        ('mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py', 'loss_rekd', ['bbox']),
    'configs/kd/mask-rcnn_r101_r50_coco.py':
        ('mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py', 'loss_mask_kd', ['bbox', 'segm']),
    'configs/dist/retinanet_r101_r50_coco.py':
        ('mmdet::retinanet/retinanet_r50_fpn_1x_coco.py', 'loss_dist', ['bbox']),
    'configs/kd/rtmdet_l_tiny_coco.py':
        ('mmdet::rtmdet/rtmdet_tiny_8xb32-300e_coco.py', 'loss_kd', ['bbox']),
    'configs/ld/gfl_r101_r18_coco.py':
        ('mmdet::gfl/gfl_r50_fpn_1x_coco.py', 'loss_ld', ['bbox']),
}
#: RTMDet's hooks as the shipped config sets them, moved to epoch 2 of 2 (the simple
#: pipeline of the generated data at another scale as its stage-2 pipeline).
RTMDET_HOOKS = [
    dict(type='mmkd.StudentEMAHook', ema_type='ExpMomentumEMA', momentum=0.2,
         update_buffers=True, priority=49),
    dict(type='PipelineSwitchHook', switch_epoch=1, switch_pipeline=[
        dict(type='LoadImageFromFile'), dict(type='LoadAnnotations', with_bbox=True),
        dict(type='Resize', scale=(96, 96), keep_ratio=True), dict(type='PackDetInputs')]),
    dict(type='mmkd.DistillLossScheduleHook', stop=2),
]


def _metrics(log: str, kinds) -> dict:
    out = {}
    for kind in kinds:
        found = re.findall(rf'coco/{kind}_mAP:\s*(-?[0-9.]+)', log)
        assert found, f'coco/{kind}_mAP not in the output:\n{log[-3000:]}'
        out[kind] = float(found[-1])
    return out


def _six_classes(config: str, with_mask: bool) -> dict:
    """Model overrides: 6 classes, no pretrained backbone. Dense heads keep every box:
    the scores of a student trained for 4 iterations stay below the 0.05 default, and
    RTMDet's boxes stay sub-pixel in 8 warm-up iterations (lr <= 3e-5), so mmdet's
    ``min_bbox_size=0`` (width and height > 0) dropped every box for some seeds."""
    if 'rcnn' not in config:
        return dict(backbone=dict(init_cfg=None), bbox_head=dict(num_classes=6),
                    test_cfg=dict(score_thr=0.0, min_bbox_size=-1))
    roi_head = dict(bbox_head=dict(num_classes=6))
    if with_mask:
        roi_head['mask_head'] = dict(num_classes=6)
    return dict(backbone=dict(init_cfg=None), roi_head=roi_head)


def _student_model(config: str, with_mask: bool) -> dict:
    """Overrides of the plain student's mmdet config: as the distiller's student."""
    model = _six_classes(config, with_mask)
    if 'gfl_r101_r18' in config:  # GFL's R50 config with the R18 backbone of the LD pair
        model['backbone'].update(depth=18)
        model['neck'] = dict(in_channels=[64, 128, 256, 512])
    return model


def _train_teacher(path: str, data: dict, out: str) -> None:
    """Two SGD iterations of the teacher config on the generated data, saved as a checkpoint."""
    init_default_scope('mmdet')
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cfg = Config.fromfile(path)
        torch.manual_seed(0)
        teacher = MODELS.build(no_pretrained(copy.deepcopy(cfg.model)))
        teacher.init_weights()
        from mmdet.registry import DATASETS
        dataset = copy.deepcopy(data['train_dataloader']['dataset'])
        dataset.pop('_delete_')
        dataset = DATASETS.build(dataset)
        optim = OptimWrapper(torch.optim.SGD(teacher.parameters(), lr=0.01, momentum=0.9))
        teacher.train()
        for i in range(2):
            teacher.train_step(pseudo_collate([dataset[2 * i], dataset[2 * i + 1]]), optim)
        torch.save(dict(state_dict=teacher.state_dict(), meta=dict(note='test teacher')), out)
    finally:
        torch.set_num_threads(threads)


@pytest.mark.slow
@pytest.mark.parametrize('config', list(CASES))
def test_train_test_extract(config, det_data, tmp_path):
    student_base, distill_key, kinds = CASES[config]
    with_mask = 'segm' in kinds
    rtmdet = 'rtmdet' in config
    data = det_overrides(det_data, scale=(64, 64), batch_size=2, max_epochs=2 if rtmdet else 1,
                         with_mask=with_mask)
    # The teacher: the config's own teacher config with 6 classes, trained here.
    teacher_base = Config.fromfile(osp.join(ROOT, config)).model.teacher
    assert teacher_base.startswith('mmdet::') and ('r101' in teacher_base or
                                                   'rtmdet_l' in teacher_base)
    teacher_cfg = write_config(str(tmp_path / 'teacher.py'), teacher_base,
                               dict(model=_six_classes(config, with_mask)))
    teacher_ckpt = str(tmp_path / 'teacher.pth')
    _train_teacher(teacher_cfg, data, teacher_ckpt)

    # The shipped config, pointed at the data; the rest through --cfg-options.
    if rtmdet:
        shipped = Config.fromfile(osp.join(ROOT, config)).custom_hooks
        assert [h['type'] for h in shipped] == [h['type'] for h in RTMDET_HOOKS]
        assert (shipped[1].switch_epoch, shipped[2].stop) == (280, 281)
    hooks = dict(custom_hooks=RTMDET_HOOKS) if rtmdet else {}
    cfg = write_config(str(tmp_path / 'distill.py'), osp.join(ROOT, config), dict(data, **hooks))
    options = ['--cfg-options', f'model.teacher={teacher_cfg}',
               f'model.teacher_ckpt={teacher_ckpt}', 'model.student.backbone.init_cfg=None']
    dense = 'rcnn' not in config
    head = 'model.student.bbox_head' if dense else 'model.student.roi_head.bbox_head'
    options.append(f'{head}.num_classes=6')
    if dense:
        options += ['model.student.test_cfg.score_thr=0.0',
                    'model.student.test_cfg.min_bbox_size=-1']
    if 'rcnn' in config:
        options += ['model.student.train_cfg.rcnn.sampler.num=64',
                    'model.student.train_cfg.rpn_proposal.max_per_img=100']
    if with_mask:
        options += ['model.student.roi_head.mask_head.num_classes=6',
                    'model.mask_distill_losses.mask_kd.type=KDLoss',
                    'model.mask_distill_losses.mask_kd.use_sigmoid=True']
    work = str(tmp_path / 'work')
    log = run_tool(['tools/train.py', cfg, '--work-dir', work] + options, env=ONE_THREAD)
    assert 'Epoch(train) [1][4/4]' in log and distill_key in log
    assert 'randomly initialised' not in log  # the saved teacher was loaded
    losses = re.findall(rf'{distill_key}: ([0-9.e+-]+|nan)', log)
    assert losses and all(float(v) >= 0 for v in losses), losses  # finite and >= 0
    assert float(losses[0]) > 0

    ckpt = osp.join(work, 'epoch_2.pth' if rtmdet else 'epoch_1.pth')
    saved = torch.load(ckpt, map_location='cpu', weights_only=False)
    state = saved['state_dict']
    saved_teacher = torch.load(teacher_ckpt, map_location='cpu')['state_dict']
    for k, v in saved_teacher.items():  # the teacher did not move
        assert torch.equal(state[f'teacher.{k}'], v), k
    if rtmdet:
        # Epoch 2: the stage-2 pipeline, no distillation; the EMA holds the student only.
        assert 'Switch pipeline now!' in log and 'Epoch(train) [2][4/4]' in log
        assert len(losses) == 8 and all(float(v) == 0 for v in losses[4:]), losses
        ema = saved['ema_state_dict']
        student_keys = {k[len('student.'):] for k in state if k.startswith('student.')}
        assert {k[len('module.'):] for k in ema if k.startswith('module.')} == student_keys
        assert not any('teacher' in k for k in ema)

    log = run_tool(['tools/test.py', cfg, ckpt, '--work-dir', str(tmp_path / 'test'), '--out',
                    str(tmp_path / 'distiller.pkl')] + options, env=ONE_THREAD)
    distilled = _metrics(log, kinds)
    assert all(0.0 <= v <= 1.0 for v in distilled.values())

    student_ckpt = str(tmp_path / 'student.pth')
    log = run_tool(['tools/model_converters/extract_student.py', ckpt, student_ckpt])
    assert 'student tensors' in log
    assert ('EMA student' in log) == rtmdet, log
    student_state = torch.load(student_ckpt, map_location='cpu', weights_only=True)['state_dict']
    assert student_state and not any(k.startswith(('teacher.', 'student.'))
                                     for k in student_state)
    student_cfg = write_config(str(tmp_path / 'student.py'), student_base,
                               dict(data, model=_student_model(config, with_mask)))
    log = run_tool([MMDET_TEST, student_cfg, student_ckpt, '--work-dir',
                    str(tmp_path / 'student_test'), '--out', str(tmp_path / 'student.pkl')],
                   env=ONE_THREAD)
    assert 'unexpected key' not in log and 'missing keys' not in log
    assert _metrics(log, kinds) == distilled
    # Same predictions, image by image.
    with open(tmp_path / 'distiller.pkl', 'rb') as f:
        by_distiller = pickle.load(f)
    with open(tmp_path / 'student.pkl', 'rb') as f:
        by_student = pickle.load(f)
    assert len(by_distiller) == len(by_student) == 4
    assert sum(len(r['pred_instances']['scores']) for r in by_student) > 0
    for d, s in zip(by_distiller, by_student):
        assert d['img_path'] == s['img_path']
        for key in ('bboxes', 'scores', 'labels'):
            torch.testing.assert_close(d['pred_instances'][key], s['pred_instances'][key])
