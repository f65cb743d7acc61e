"""DenseHeadDistiller on every dense head it serves: RetinaNet, FCOS, ATSS, GFL, RTMDet.

Each head: a ResNet-18 (RTMDet: its tiny CSPNeXt) teacher-student pair with
different random weights trains a step on generated data; the distillation
value is checked against the sigmoid KD formula written out here; the teacher
runs its classification branch only. GFL with LD: the value equals mmdet's own
``LDHead`` on the same inputs. Heads that cannot be served are refused by name.
"""
import copy
from unittest import mock

import pytest
import torch
import torch.nn.functional as F
from mmengine.hub import get_config
from mmengine.optim import OptimWrapper
from mmengine.registry import init_default_scope

from mmkd.models.distillers.dense_heads import class_branch, class_scores
from mmkd.recipes import no_pretrained
from mmkd.registry import MODELS
from mmkd.testing.batches import det_batch

HEADS = {
    'RetinaHead': 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py',
    'FCOSHead': 'mmdet::fcos/fcos_r50-caffe_fpn_gn-head_1x_coco.py',
    'ATSSHead': 'mmdet::atss/atss_r50_fpn_1x_coco.py',
    'GFLHead': 'mmdet::gfl/gfl_r50_fpn_1x_coco.py',
    'RTMDetSepBNHead': 'mmdet::rtmdet/rtmdet_tiny_8xb32-300e_coco.py',
}
KD = dict(kd=dict(type='KDLoss', use_sigmoid=True, temperature=2.0))


@pytest.fixture(scope='module', autouse=True)
def mmdet_scope_one_thread():
    init_default_scope('mmdet')
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def detector(base, num_classes=3, **head):
    """A small detector of ``base``'s type: ResNet-18 backbones, 3 classes, no pretrained."""
    model = no_pretrained(copy.deepcopy(get_config(base).model))
    if model.backbone.type == 'ResNet':
        model.backbone.update(depth=18, init_cfg=None)
        model.neck.in_channels = [64, 128, 256, 512]
    model.bbox_head.update(num_classes=num_classes, **head)
    return model


def pair(base, seed=0, **kwargs):
    """A distiller whose teacher has other random weights than its student."""
    torch.manual_seed(seed)
    cfg = dict(type='mmkd.DenseHeadDistiller', student=detector(base), teacher=detector(base))
    cfg.update(kwargs)
    return MODELS.build(cfg)


def sigmoid_kd(cls_s, cls_t, C, T=2.0):
    """Bernoulli KL per class, summed over classes, rows averaged, T^2; levels averaged."""
    per_level = []
    for s, t in zip(cls_s, cls_t):
        s = s.permute(0, 2, 3, 1).reshape(-1, C).double() / T
        t = t.permute(0, 2, 3, 1).reshape(-1, C).double() / T
        p = t.sigmoid()
        kl = p * (F.logsigmoid(t) - F.logsigmoid(s)) + \
            (1 - p) * (F.logsigmoid(-t) - F.logsigmoid(-s))
        per_level.append(T * T * kl.sum(1).mean())
    return per_level


@pytest.mark.parametrize('name', HEADS)
def test_every_head_trains_with_the_kd_value_by_hand(name):
    distiller = pair(HEADS[name], distill_losses=dict(KD, dist=dict(type='DISTLoss',
                                                                   use_sigmoid=True)))
    head_s, head_t = distiller.student.bbox_head, distiller.teacher.bbox_head
    assert type(head_s).__name__ == name
    inputs, samples = det_batch(64)
    distiller.train()
    # The teacher runs its classification branch alone: no box conv is called.
    box_layers = [m for n, m in head_t.named_modules() if n.startswith(('reg_convs', 'retina_reg',
                  'conv_reg', 'atss_reg', 'atss_centerness', 'gfl_reg', 'rtm_reg',
                  'conv_centerness')) and not list(m.children())]
    assert box_layers and class_branch(head_t) is not None
    calls = []
    hooks = [m.register_forward_hook(lambda *a: calls.append(1)) for m in box_layers]
    losses = distiller.loss(inputs, samples)
    for h in hooks:
        h.remove()
    assert calls == []
    # The student's own losses are those of student.loss.
    reference = distiller.student.loss(inputs, samples)
    assert set(losses) == set(reference) | {'loss_kd', 'loss_dist'}
    for key in reference:
        torch.testing.assert_close(total(losses[key]), total(reference[key]))
    with torch.no_grad():
        cls_s = head_s(distiller.student.extract_feat(inputs))[0]
        feats_t = distiller.teacher.extract_feat(inputs)
        cls_t = head_t(feats_t)[0]
        fast = class_scores(head_t, feats_t)
    assert all(torch.equal(a, b) for a, b in zip(cls_t, fast))
    per_level = sigmoid_kd(cls_s, cls_t, C=3)
    assert len(per_level) == len(head_s.prior_generator.strides)
    expected = sum(per_level) / len(per_level)
    assert float(expected) > 1e-4
    torch.testing.assert_close(losses['loss_kd'].double(), expected, rtol=1e-5, atol=1e-8)
    # A training step: finite, the teacher frozen, the student moves.
    teacher_state = copy.deepcopy(distiller.teacher.state_dict())
    before = head_s.state_dict()[next(iter(head_s.state_dict()))].clone()
    optim = OptimWrapper(torch.optim.SGD(distiller.student.parameters(), lr=0.01))
    log = distiller.train_step(_packed(inputs, samples), optim)
    assert all(torch.isfinite(v) for v in log.values()) and log['loss_kd'] > 0
    assert log['loss_dist'] > 0
    assert all(torch.equal(v, distiller.teacher.state_dict()[k]) for k, v in teacher_state.items())
    assert not torch.equal(before, head_s.state_dict()[next(iter(head_s.state_dict()))])


def total(value):
    """A loss entry summed: mmdet heads give a tensor or a list of per-level tensors."""
    return torch.stack(list(value)).sum() if isinstance(value, (list, tuple)) else value


def _packed(inputs, samples):
    """A data batch as the dataloader gives it (uint8-range images, before preprocessing)."""
    images = ((inputs - inputs.min()) / (inputs.max() - inputs.min()) * 255).round()
    return dict(inputs=[x for x in images], data_samples=samples)


def test_ld_equals_mmdet_ld_head():
    """LD (T=10, weight 0.25) on GFL = mmdet's LDHead ``loss_ld`` on the same student and
    teacher outputs; the student's own GFL losses are unchanged."""
    base = HEADS['GFLHead']
    distiller = pair(base, seed=1, distill_losses=dict(ld=dict(type='LDLoss')))
    assert distiller.input_of == dict(ld='box_distributions') and distiller.reads_boxes
    inputs, samples = det_batch(64)
    distiller.train()
    losses = distiller.loss(inputs, samples)
    # mmdet's LDHead with the student's weights.
    ld_cfg = copy.deepcopy(detector(base).bbox_head)
    ld_cfg.update(type='LDHead', train_cfg=detector(base).train_cfg,
                  loss_ld=dict(type='KnowledgeDistillationKLDivLoss', loss_weight=0.25, T=10))
    ld_head = MODELS.build(ld_cfg)
    ld_head.load_state_dict(distiller.student.bbox_head.state_dict())
    ld_head.train()
    with torch.no_grad():
        out_teacher = distiller.teacher.bbox_head(distiller.teacher.extract_feat(inputs))
    x = distiller.student.extract_feat(inputs)
    ref = ld_head.loss(x, out_teacher, samples)
    expected = torch.stack(ref['loss_ld']).sum()
    assert float(expected.detach()) > 1e-3
    torch.testing.assert_close(losses['loss_ld'], expected, rtol=1e-5, atol=1e-7)
    for key in ('loss_cls', 'loss_bbox', 'loss_dfl'):
        torch.testing.assert_close(total(losses[key]), total(ref[key]))
    # Gradients reach the student's box branch only through LD, never the teacher.
    losses['loss_ld'].backward()
    assert distiller.student.bbox_head.gfl_reg.weight.grad.abs().sum() > 0
    assert distiller.student.bbox_head.gfl_cls.weight.grad is None
    assert all(p.grad is None for p in distiller.teacher.parameters())
    # No positive location (images without boxes): an exact 0 on the graph.
    from mmengine.structures import InstanceData
    empty = copy.deepcopy(samples)
    for s in empty:
        s.gt_instances = InstanceData(bboxes=torch.zeros(0, 4), labels=torch.zeros(0).long())
    zero = distiller.loss(inputs, empty)['loss_ld']
    assert float(zero) == 0.0 and zero.requires_grad


def test_ld_with_kd_and_two_teachers():
    """LD + KD together; two identical teachers give the single teacher's values."""
    base = HEADS['GFLHead']
    losses = dict(KD, ld=dict(type='LDLoss', temperature=5.0, loss_weight=1.0))
    one = pair(base, seed=2, distill_losses=losses)
    torch.manual_seed(2)
    student, teacher = detector(base), detector(base)
    two = MODELS.build(dict(type='mmkd.DenseHeadDistiller', student=student, distill_losses=losses,
                            teachers=[dict(model=teacher), dict(model=copy.deepcopy(teacher),
                                                               weight=3.0)]))
    two.student.load_state_dict(one.student.state_dict())
    two.teacher.load_state_dict(one.teacher.state_dict())
    two.teacher_1.load_state_dict(one.teacher.state_dict())
    inputs, samples = det_batch(64)
    one.train(), two.train()
    a, b = one.loss(inputs, samples), two.loss(inputs, samples)
    for key in ('loss_kd', 'loss_ld'):
        assert float(a[key]) > 0
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-7)


def test_heads_and_losses_that_cannot_be_served_are_refused():
    rtmdet, retina, gfl = HEADS['RTMDetSepBNHead'], HEADS['RetinaHead'], HEADS['GFLHead']
    ld = dict(ld=dict(type='LDLoss'))
    for base, head in ((rtmdet, 'RTMDetSepBNHead'), (retina, 'RetinaHead')):
        with pytest.raises(ValueError, match=rf"loss 'ld' \(LDLoss\) cannot distil the sigmoid "
                                             rf"head {head} \(its boxes are no box-side "
                                             r'distributions.*reg_max\)'):
            pair(base, distill_losses=ld)
    for loss in ('DKDLoss', 'RLDLoss'):
        with pytest.raises(ValueError, match=rf"\({loss}\) cannot distil the sigmoid head "
                                             r'RTMDetSepBNHead: .* only for a softmax'):
            pair(rtmdet, distill_losses=dict(x=dict(type=loss)))
    torch.manual_seed(0)
    other_bins = dict(type='mmkd.DenseHeadDistiller', student=detector(gfl),
                      teacher=detector(gfl, reg_max=8), distill_losses=ld)
    with pytest.raises(ValueError, match=r'distill_losses.ld: the teacher head GFLHead must '
                                         r"predict box-side distributions with the student's "
                                         r'reg_max=16 \(it has reg_max=8\)'):
        MODELS.build(other_bins)
    softmax = detector('mmdet::ssd/ssd300_coco.py')
    with pytest.raises(TypeError, match='the student head SSDHead is not supported: it needs '
                                        r'sigmoid classification \(use_sigmoid_cls\)'):
        MODELS.build(dict(type='mmkd.DenseHeadDistiller', student=softmax,
                          teacher=copy.deepcopy(softmax)))
    yolo = detector('mmdet::yolo/yolov3_d53_8xb8-320-273e_coco.py')
    with pytest.raises(TypeError, match='the student head YOLOV3Head is not supported'):
        MODELS.build(dict(type='mmkd.DenseHeadDistiller', student=yolo,
                          teacher=copy.deepcopy(yolo)))


def test_rtmdet_with_objectness_runs_the_whole_teacher_head():
    """A head whose class scores use its box branch (RTMDet with_objectness) or whose
    forward is unknown runs its whole forward: same scores, no shortcut."""
    base = HEADS['RTMDetSepBNHead']
    torch.manual_seed(0)
    head = MODELS.build(detector(base, with_objectness=True)).bbox_head
    assert class_branch(head) is None
    feats = [torch.randn(1, 96, 8 // 2 ** i, 8 // 2 ** i) for i in range(3)]
    with torch.no_grad(), mock.patch.object(type(head), 'forward',
                                            wraps=head.forward) as forward:
        scores = class_scores(head, feats)
        assert forward.call_count == 1
        assert all(torch.equal(a, b) for a, b in zip(scores, head(feats)[0]))
