"""Teachers as users have them: several teachers (weighted mean of their logits) and a
teacher in bf16 (autocast), on every teacher-student distiller."""
import copy

import pytest
import torch
from mmengine.hub import get_config
from mmengine.registry import init_default_scope

from mmkd.models.distillers import ClsDistiller, TeacherStudentDistiller
from mmkd.models.distillers.cls_distiller import classifier_forward
from mmkd.models.distillers.teacher_student import weighted_mean
from mmkd.models.losses import kd_loss
from mmkd.registry import MODELS
from mmkd.testing.batches import det_batch, tiny_classifier

C = 5


def classifier(num_classes=C, width=8, mean=128.):
    return tiny_classifier(num_classes, width=width, preprocessor=dict(mean=[mean] * 3))


def cls_batch(n=4):
    from mmpretrain.structures import DataSample
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 3, 32, 32, generator=g), [DataSample().set_gt_label(i % C)
                                                    for i in range(n)]


def seg_batch():
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    g = torch.Generator().manual_seed(0)
    samples = []
    for _ in range(2):
        sample = SegDataSample(metainfo=dict(img_shape=(32, 32), pad_shape=(32, 32),
                                             ori_shape=(32, 32)))
        sample.gt_sem_seg = PixelData(data=torch.randint(0, 4, (1, 32, 32), generator=g))
        samples.append(sample)
    return torch.randn(2, 3, 32, 32, generator=g), samples


def light_detector(base, depth=18):
    model = copy.deepcopy(get_config(base).model)
    model.backbone.update(depth=depth, init_cfg=None)
    model.neck.in_channels = [64, 128, 256, 512]
    if 'rpn_head' in model:
        model.roi_head.bbox_head.num_classes = 3
    else:
        model.bbox_head.num_classes = 3
    return model


def segmentor():
    from mmengine.config import ConfigDict
    norm = dict(type='BN', requires_grad=True)
    return dict(type='EncoderDecoder', _scope_='mmseg',
                data_preprocessor=dict(type='SegDataPreProcessor', mean=[128.] * 3,
                                       std=[64.] * 3, size=(32, 32)),
                backbone=dict(type='ResNetV1c', depth=18, base_channels=8, stem_channels=8,
                              out_indices=(0, 1, 2, 3), norm_cfg=norm),
                decode_head=dict(type='FCNHead', in_channels=64, in_index=3, channels=8,
                                 num_convs=1, num_classes=4, norm_cfg=norm,
                                 loss_decode=dict(type='CrossEntropyLoss')),
                train_cfg=dict(), test_cfg=ConfigDict(mode='whole'))


#: task -> (scope, distiller type, student config, losses, batch)
TASKS = {
    'cls': ('mmpretrain', 'mmkd.ClsDistiller', classifier,
            dict(kd=dict(type='KDLoss'), sdd=dict(type='SDDLoss', scales=(1, 2))), cls_batch),
    'two-stage': ('mmdet', 'mmkd.TwoStageDistiller',
                  lambda: light_detector('mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py'),
                  dict(kd=dict(type='KDLoss', ignore_index=None),
                       sdd=dict(type='SDDLoss', ignore_index=None)), det_batch),
    'dense': ('mmdet', 'mmkd.DenseHeadDistiller',
              lambda: light_detector('mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'),
              dict(dist=dict(type='DISTLoss', use_sigmoid=True)), det_batch),
    'seg': ('mmseg', 'mmkd.SegDistiller', segmentor,
            dict(kd=dict(type='KDLoss'), cwd=dict(type='ChannelWiseDivergence')), seg_batch),
}


def build(task, **kwargs):
    scope, kind, student, losses, _ = TASKS[task]
    init_default_scope(scope)
    torch.manual_seed(0)
    kwargs.setdefault('distill_losses', losses)
    if 'teachers' not in kwargs:
        kwargs.setdefault('teacher', student())
    return MODELS.build(dict(type=kind, student=student(), **kwargs))


@pytest.mark.parametrize('task', sorted(TASKS))
def test_two_identical_teachers_give_exactly_the_single_teacher_losses(task):
    single = build(task).train()
    teacher = copy.deepcopy(single.teacher.state_dict())
    double = build(task, teachers=[dict(model=TASKS[task][2]()), dict(model=TASKS[task][2](),
                                                                       weight=1.0)]).train()
    assert [name for name, _ in double.teachers] == ['teacher', 'teacher_1']
    double.student.load_state_dict(single.student.state_dict())
    for _, model in double.teachers:
        model.load_state_dict(teacher)
    inputs, samples = TASKS[task][4]()
    torch.manual_seed(3)
    want = single.loss(inputs, copy.deepcopy(samples))
    torch.manual_seed(3)  # the same RoI sampling
    got = double.loss(inputs, copy.deepcopy(samples))
    assert set(got) == set(want)
    for key in want:  # (mmdet's dense heads give one value per level)
        w, g = want[key], got[key]
        w, g = (w, g) if isinstance(w, list) else ([w], [g])
        assert all(torch.equal(a, b) for a, b in zip(g, w)), key


def test_weights_are_respected_and_each_teacher_runs_once():
    model = build('cls', distill_losses=dict(kd=dict(type='KDLoss', temperature=2.0)),
                  teachers=[dict(model=classifier(), weight=3.0),
                            dict(model=classifier(width=16, mean=100.), weight=1.0)])
    assert model.teacher_weights == [0.75, 0.25]
    assert model.renormalise is None and model.renormalise_1 is not None
    calls = []
    for name, teacher in model.teachers:
        teacher.backbone.register_forward_hook(lambda *_, name=name: calls.append(name))
    inputs, samples = cls_batch()
    got = model.loss(inputs, samples)['loss_kd']
    assert calls == ['teacher', 'teacher_1']  # one forward per teacher
    with torch.no_grad():
        a = classifier_forward(model.teacher, model.teacher_inputs(inputs, None, 0))[1]
        b = classifier_forward(model.teacher_1, model.teacher_inputs(inputs, None, 1))[1]
    logits_s = classifier_forward(model.student, inputs)[1]
    torch.testing.assert_close(got, kd_loss(logits_s, 0.75 * a + 0.25 * b, 2.0).mean())


def test_a_teacher_with_other_classes_or_a_bad_spec_is_refused():
    with pytest.raises(ValueError, match='student and teacher_1 must have the same classes: '
                                         'the student has 5, the teacher_1 7'):
        build('cls', teachers=[dict(model=classifier()), dict(model=classifier(7))])
    with pytest.raises(ValueError, match=r'either teacher / teacher_ckpt .* or teachers'):
        build('cls', teacher=classifier(), teachers=[dict(model=classifier())])
    with pytest.raises(ValueError, match=r'teachers\[0\].weight must be a positive'):
        build('cls', teachers=[dict(model=classifier(), weight=0.0)])
    with pytest.raises(ValueError, match=r'teachers\[0\] must be dict\(model=...'):
        build('cls', teachers=[dict(modle=classifier())])
    with pytest.raises(ValueError, match='give the teacher'):
        ClsDistiller(classifier())
    with pytest.raises(ValueError, match="teacher_dtype must be one of"):
        build('cls', teacher_dtype='int8')


def test_weighted_mean_of_nested_outputs():
    out = weighted_mean([{'a': [torch.ones(2)], 'b': None}, {'a': [torch.zeros(2)], 'b': None}],
                        [0.25, 0.75])
    assert torch.equal(out['a'][0], torch.full((2, ), 0.25)) and out['b'] is None


#: |bf16 - fp32| of each loss, relative to the fp32 value (stated in the README).
BF16_RTOL = 0.05


def cls_losses():
    return sorted(n for n, cls in MODELS.module_dict.items()
                  if hasattr(cls, 'inputs') and cls.__module__.startswith('mmkd.')
                  and set(cls.inputs) & {'logits', 'features'} and n != 'DRGLoss')


@pytest.mark.parametrize('name', cls_losses())
def test_a_bf16_teacher_gives_the_fp32_losses_within_tolerance(name):
    losses = dict(x=dict(type=name, **({'k': 3} if name == 'ReKDLoss' else {})))
    fp32 = build('cls', distill_losses=losses).train()
    bf16 = build('cls', distill_losses=losses, teacher_dtype='bf16').train()
    bf16.load_state_dict(fp32.state_dict())
    inputs, samples = cls_batch(8)
    want = fp32.loss(inputs, samples)['loss_x']
    got = bf16.loss(inputs, samples)['loss_x']
    assert got.dtype == torch.float32  # the losses still compute in fp32
    torch.testing.assert_close(got, want, rtol=BF16_RTOL, atol=1e-3)
    got.backward()
    grads = [p.grad for p in bf16.student.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert all(p.grad is None for _, t in bf16.teachers for p in t.parameters())


def test_teacher_logits_are_bf16_under_autocast_and_fp16_needs_cuda():
    model = build('cls', teacher_dtype='bf16')
    inputs, _ = cls_batch()
    logits = model.teacher_outputs(lambda t, x: classifier_forward(t, x)[1], inputs)
    assert logits.dtype == torch.bfloat16
    fp16 = build('cls', teacher_dtype='fp16')
    with pytest.raises(ValueError, match="teacher_dtype='fp16' needs a CUDA device"):
        fp16.loss(*cls_batch())


def test_two_bf16_teachers_train_a_step():
    from mmengine.optim import OptimWrapper
    model = build('cls', teacher_dtype='bf16', teachers=[
        dict(model=classifier(), weight=2.0), dict(model=classifier(width=16))]).train()
    optim = OptimWrapper(torch.optim.SGD(model.student.parameters(), lr=0.1))
    inputs, samples = cls_batch()
    log = model.train_step(dict(inputs=inputs, data_samples=samples), optim)
    assert set(log) == {'loss', 'loss_kd', 'loss_sdd'}
    assert all(torch.isfinite(v) for v in log.values())
    assert isinstance(model, TeacherStudentDistiller)


# ------------------------------------------- a teacher trained on more classes
NAMES = ['circle', 'square', 'triangle', 'star', 'cross', 'ring']  # the teacher's 6 classes
SUBSET = ['star', 'circle', 'ring']  # the student's 3, in its own order
INDEX = [3, 0, 5]


def test_a_six_class_teacher_distils_a_three_class_classifier():
    init_default_scope('mmpretrain')
    torch.manual_seed(0)
    model = ClsDistiller(classifier(3), classifier(6), student_classes=SUBSET,
                         teacher_classes=NAMES,
                         distill_losses=dict(kd=dict(type='KDLoss', temperature=2.0),
                                             sdd=dict(type='SDDLoss', scales=(1, 2))))
    inputs, samples = cls_batch()
    for sample in samples:
        sample.set_gt_label(int(sample.gt_label) % 3)
    logits, cells = model.teacher_outputs(
        lambda t, x: (classifier_forward(t, x)[1],
                      model.distill_losses['sdd'].local_logits(
                          classifier_forward(t, x)[0][-1], t.head.fc)), inputs)
    with torch.no_grad():
        own = classifier_forward(model.teacher, inputs)[1]
    assert torch.equal(logits, own[:, INDEX])  # the teacher's own logits of those classes
    assert cells.shape[1] == 3
    losses = model.loss(inputs, samples)
    logits_s = classifier_forward(model.student, inputs)[1]
    torch.testing.assert_close(losses['loss_kd'], kd_loss(logits_s, own[:, INDEX], 2.0).mean())
    assert torch.isfinite(losses['loss_sdd'])


def test_a_six_class_teacher_distils_a_three_class_faster_rcnn():
    init_default_scope('mmdet')
    student = light_detector('mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py')
    teacher = copy.deepcopy(student)
    teacher.roi_head.bbox_head.num_classes = 6
    torch.manual_seed(0)
    model = MODELS.build(dict(type='mmkd.TwoStageDistiller', student=student, teacher=teacher,
                              student_classes=SUBSET, teacher_classes=NAMES,
                              distill_losses=dict(kd=dict(type='KDLoss', ignore_index=None),
                                                  sdd=dict(type='SDDLoss',
                                                           ignore_index=None)))).train()
    inputs, samples = det_batch()
    torch.manual_seed(3)
    losses = model.loss(inputs, copy.deepcopy(samples))
    assert all(torch.isfinite(v) for k, v in losses.items() if k.startswith('loss_') and
               not isinstance(v, list))
    # the teacher's RoI logits of the student's classes, background (6) kept last
    torch.manual_seed(3)
    s = model.student_pass(inputs, copy.deepcopy(samples))
    from mmkd.utils.compat import roi_bbox_forward
    with torch.no_grad():
        own = roi_bbox_forward(model.teacher.roi_head, model.teacher.extract_feat(inputs),
                               s.rois)['cls_score']
    got = model.teacher_outputs(
        lambda t, x: {'logits': roi_bbox_forward(t.roi_head, t.extract_feat(x),
                                                 s.rois)['cls_score']}, inputs)['logits']
    assert got.shape == (len(s.rois), 4) and torch.equal(got, own[:, INDEX + [6]])
    torch.testing.assert_close(losses['loss_kd'], kd_loss(s.cls_score, got, 4.0).mean())


def test_class_names_not_found_are_listed_and_names_come_from_checkpoint_or_config(tmp_path):
    init_default_scope('mmpretrain')
    with pytest.raises(ValueError, match=r"student classes \['hexagon'\] are not among the 6 "
                                         'classes of teacher'):
        ClsDistiller(classifier(2), classifier(6), student_classes=['star', 'hexagon'],
                     teacher_classes=NAMES)
    with pytest.raises(ValueError, match='class names of teacher are unknown'):
        ClsDistiller(classifier(3), classifier(6), student_classes=SUBSET)
    with pytest.raises(ValueError, match='teacher predicts 6 classes but 5 class names'):
        ClsDistiller(classifier(3), classifier(6), student_classes=['star', 'ring', 'square'],
                     teacher_classes=NAMES[1:])
    # from the checkpoint's meta (MMEngine runners write dataset_meta)
    teacher = MODELS.build(classifier(6))
    path = str(tmp_path / 'teacher.pth')
    torch.save(dict(state_dict=teacher.state_dict(), meta=dict(dataset_meta=dict(
        classes=tuple(NAMES)))), path)
    model = ClsDistiller(classifier(3), classifier(6), teacher_ckpt=path, student_classes=SUBSET)
    assert model.class_index('teacher').tolist() == INDEX
    # from a config's dataset: COCO's 80 classes
    from mmdet.datasets import CocoDataset

    from mmkd.models.distillers.teacher_student import config_class_names
    names = config_class_names('mmdet::faster_rcnn/faster-rcnn_r101_fpn_1x_coco.py')
    assert names == list(CocoDataset.METAINFO['classes'])


def test_two_bf16_teachers_with_a_class_mapping_train_a_step():
    from mmengine.optim import OptimWrapper
    init_default_scope('mmpretrain')
    torch.manual_seed(0)
    model = ClsDistiller(classifier(3), teacher_dtype='bf16', student_classes=SUBSET,
                         teachers=[dict(model=classifier(6), classes=NAMES, weight=2.0),
                                   dict(model=classifier(6, width=16), classes=NAMES[::-1])],
                         distill_losses=dict(kd=dict(type='KDLoss'),
                                             dkd=dict(type='DKDLoss'))).train()
    assert model.class_index('teacher_1').tolist() == [5 - i for i in INDEX]
    optim = OptimWrapper(torch.optim.SGD(model.student.parameters(), lr=0.1))
    inputs, samples = cls_batch()
    for sample in samples:
        sample.set_gt_label(int(sample.gt_label) % 3)
    log = model.train_step(dict(inputs=inputs, data_samples=samples), optim)
    assert set(log) == {'loss', 'loss_kd', 'loss_dkd'}
    assert all(torch.isfinite(v) for v in log.values())


def test_amp_training_with_a_bf16_teacher():
    """``--amp`` (MMEngine's AmpOptimWrapper) around a distiller step. The wrapper refuses
    to be built without CUDA, so its device check is bypassed here; everything it runs
    (autocast on the batch's device, in bf16; its loss scaler) is the real thing."""
    from unittest import mock

    from mmengine.optim import AmpOptimWrapper
    model = build('cls', teacher_dtype='bf16').train()
    with mock.patch('mmengine.optim.optimizer.amp_optimizer_wrapper.is_cuda_available',
                    return_value=True):
        optim = AmpOptimWrapper(optimizer=torch.optim.SGD(model.student.parameters(), lr=0.1),
                                dtype='bfloat16', loss_scale='dynamic')
    inputs, samples = cls_batch()
    before = [p.clone() for p in model.student.parameters()]
    log = model.train_step(dict(inputs=inputs, data_samples=samples), optim)
    assert all(torch.isfinite(v) and v.dtype == torch.float32 for v in log.values())
    assert any(not torch.equal(a, b) for a, b in zip(before, model.student.parameters()))
    assert all(p.grad is None for _, t in model.teachers for p in t.parameters())
