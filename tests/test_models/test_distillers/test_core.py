"""The distiller core: build hooks, capability-driven loss dispatch, loss-key checks.

Capability decisions are checked for every loss in the registry (timm style):
a loss a distiller accepts must run on exactly what that distiller gives it,
and the known losses' decisions are stated by hand below.
"""
import copy

import pytest
import torch
from mmengine.hub import get_config
from mmengine.optim import OptimWrapper
from mmengine.registry import init_default_scope
from torch import nn

import mmkd.models  # noqa: F401  (fills the registry)
from mmkd.models.distillers import (
    ClsDistiller,
    DenseHeadDistiller,
    LightSKD,
    Renormalise,
    SegDistiller,
    StudentDistiller,
    TeacherStudentDistiller,
    TwoStageDistiller,
)
from mmkd.models.losses import BaseDistillLoss, KDLoss, kd_loss
from mmkd.registry import MODELS
from mmkd.testing.batches import det_batch, tiny_classifier

DISTILLERS = [ClsDistiller, LightSKD, TwoStageDistiller, DenseHeadDistiller, SegDistiller]
C = 7  # classes of the generated inputs (ReKD's default k=5 needs at least 5)


def registered_losses():
    """Every registered class that declares the loss capability attributes."""
    return sorted(name for name, cls in MODELS.module_dict.items()
                  if isinstance(cls, type) and issubclass(cls, nn.Module)
                  and hasattr(cls, 'inputs') and hasattr(cls, 'requires_target'))


def build(name, **kwargs):
    return MODELS.module_dict[name](**kwargs)  # whatever the default scope


def test_the_registry_holds_every_loss():
    assert {'KDLoss', 'DISTLoss', 'DKDLoss', 'ReKDLoss', 'RLDLoss', 'SDDLoss', 'DRGLoss',
            'DSRLoss', 'ChannelWiseDivergence', 'LDLoss'} <= set(registered_losses())


# ------------------------------------------------------- capability decisions
#: Hand-stated decisions: distiller -> loss -> input kind given, or None (refused).
EXPECTED = {
    ClsDistiller: dict(KDLoss='logits', DISTLoss='logits', DKDLoss='logits', ReKDLoss='logits',
                       RLDLoss='logits', SDDLoss='features', DRGLoss='logits', DSRLoss=None,
                       ChannelWiseDivergence=None, LDLoss=None),
    LightSKD: dict(KDLoss='logits', DISTLoss='logits', DKDLoss='logits', ReKDLoss='logits',
                   RLDLoss='logits', SDDLoss=None, DRGLoss='logits', DSRLoss='student_logits',
                   ChannelWiseDivergence=None, LDLoss=None),
    TwoStageDistiller: dict(KDLoss='logits', DISTLoss='logits', DKDLoss='logits',
                            ReKDLoss='logits', RLDLoss='logits', SDDLoss='views',
                            DRGLoss='logits', DSRLoss=None, ChannelWiseDivergence=None,
                            LDLoss=None),
    # sigmoid classes: nothing at its defaults (use_sigmoid=False), see the next test; LD
    # only per instance, on heads with box-side distributions (test_dense_heads.py)
    DenseHeadDistiller: dict(KDLoss=None, DISTLoss=None, DKDLoss=None, ReKDLoss=None,
                             RLDLoss=None, SDDLoss=None, DRGLoss=None, DSRLoss=None,
                             ChannelWiseDivergence=None, LDLoss=None),
    SegDistiller: dict(KDLoss='logits', DISTLoss='logits', DKDLoss='logits', ReKDLoss='logits',
                       RLDLoss='logits', SDDLoss=None, DRGLoss='logits', DSRLoss=None,
                       ChannelWiseDivergence='logit_maps', LDLoss=None),
}


def decision(distiller, loss):
    try:
        return distiller.input_for(loss, 'x')
    except ValueError as e:
        assert f"loss 'x' ({type(loss).__name__})" in str(e), str(e)
        return None


@pytest.mark.parametrize('distiller', DISTILLERS, ids=lambda d: d.__name__)
@pytest.mark.parametrize('name', ['KDLoss', 'DISTLoss', 'DKDLoss', 'ReKDLoss', 'RLDLoss',
                                  'SDDLoss', 'DRGLoss', 'DSRLoss', 'ChannelWiseDivergence',
                                  'LDLoss'])
def test_decisions_of_the_known_losses(distiller, name):
    assert decision(distiller, build(name)) == EXPECTED[distiller][name]


@pytest.mark.parametrize('name', ['KDLoss', 'DISTLoss'])
def test_sigmoid_heads_take_sigmoid_capable_losses_in_sigmoid_mode(name):
    loss = build(name, use_sigmoid=True)
    assert DenseHeadDistiller.input_for(loss) == 'logits'
    for softmax in (ClsDistiller, TwoStageDistiller, SegDistiller, LightSKD):
        with pytest.raises(ValueError, match='set use_sigmoid=False'):
            softmax.input_for(loss)
    with pytest.raises(ValueError, match='set use_sigmoid=True'):
        DenseHeadDistiller.input_for(build(name))


def given_inputs(distiller, kind, g):
    """What ``distiller`` passes a loss that consumes ``kind``: (args, kwargs)."""
    def randn(*shape):
        return torch.randn(*shape, generator=g, requires_grad=True)

    if kind == 'student_logits':
        return (randn(4, C), )
    if kind == 'features':  # ClsDistiller: last feature maps + linear classifiers
        return randn(4, 8, 4, 4), randn(4, 16, 2, 2), torch.arange(4) % C, \
            nn.Linear(8, C), nn.Linear(16, C)
    if kind == 'views':  # TwoStageDistiller: (R, C+1, 5) RoI views, background = C
        return randn(6, C + 1, 5), randn(6, C + 1, 5), torch.arange(6) % (C + 1)
    if distiller is TwoStageDistiller:
        return randn(6, C + 1), randn(6, C + 1), torch.arange(6) % (C + 1)
    if distiller is DenseHeadDistiller:  # (B*A, C, H, W) sigmoid rows, no labels
        return randn(4, C, 3, 5), randn(4, C, 3, 5)
    if distiller is SegDistiller:
        target = torch.randint(0, C, (2, 3, 5), generator=g)
        target[0, 0] = 255
        return randn(2, C, 3, 5), randn(2, C, 3, 5), target
    return randn(4, C), randn(4, C), torch.arange(4) % C  # classification (and LightSKD)


def call(loss, kind, args):
    return loss.loss_on_views(*args) if kind == 'views' else loss(*args)


def loss_variants():
    """Every registered loss at its defaults, and in its sigmoid mode if it has one."""
    return [(name, False) for name in registered_losses()] + [
        (name, True) for name in registered_losses() if MODELS.module_dict[name].sigmoid_capable]


@pytest.mark.parametrize('distiller', DISTILLERS, ids=lambda d: d.__name__)
@pytest.mark.parametrize('name,sigmoid', loss_variants())
def test_every_registered_loss_runs_on_what_an_accepting_distiller_gives(distiller, name,
                                                                         sigmoid):
    cls = MODELS.module_dict[name]
    loss = cls(use_sigmoid=True) if sigmoid else cls()
    kind = decision(distiller, loss)
    if kind is None:
        return
    g = torch.Generator().manual_seed(0)
    args = given_inputs(distiller, kind, g)
    for _ in range(2):  # twice: DSR compares with the previous batch
        value = call(loss, kind, args)
    assert value.dim() == 0 and torch.isfinite(value)
    value.backward()
    assert args[0].grad is not None and torch.isfinite(args[0].grad).all()
    if kind not in ('student_logits', 'features'):
        assert args[1].grad is None  # the teacher side never gets a gradient


def test_a_loss_that_declares_nothing_is_refused_by_name():
    with pytest.raises(TypeError, match=r"loss 'mine' \(MSELoss\).*does not declare"):
        ClsDistiller.input_for(nn.MSELoss(), 'mine')


# New losses, registered here, work or are refused without any distiller edit.
@MODELS.register_module(name='TestSigmoidL1Loss', force=True)
class SigmoidL1Loss(BaseDistillLoss):
    """|sigmoid(s) - sigmoid(t)| summed over classes, or the softmax version."""

    sigmoid_capable = True

    def __init__(self, use_sigmoid: bool = False, **kwargs) -> None:
        super().__init__(**kwargs)
        self.use_sigmoid = use_sigmoid

    def loss_rows(self, s, t, target):
        act = torch.sigmoid if self.use_sigmoid else (lambda z: z.softmax(dim=1))
        return (act(s) - act(t)).abs().sum(dim=1)


@MODELS.register_module(name='TestSoftmaxL1Loss', force=True)
class SoftmaxL1Loss(SigmoidL1Loss):
    """Only the softmax version."""

    sigmoid_capable = False


@pytest.fixture(scope='module')
def retina_pair():
    init_default_scope('mmdet')
    student = copy.deepcopy(get_config('mmdet::retinanet/retinanet_r50_fpn_1x_coco.py').model)
    student.backbone.update(depth=18, init_cfg=None)
    student.neck.in_channels = [64, 128, 256, 512]
    return dict(type='mmkd.DenseHeadDistiller', student=student, teacher=copy.deepcopy(student))


def test_new_sigmoid_capable_loss_is_accepted_by_the_dense_distiller(retina_pair):
    torch.manual_seed(0)
    model = MODELS.build(dict(retina_pair, distill_losses=dict(
        l1=dict(type='TestSigmoidL1Loss', use_sigmoid=True))))
    inputs, samples = det_batch()
    losses = model.loss(inputs, samples)
    assert set(losses) == {'loss_cls', 'loss_bbox', 'loss_l1'}
    # the teacher is a copy of the student, but the student was re-initialised: > 0
    assert torch.isfinite(losses['loss_l1']) and losses['loss_l1'] > 0
    model.teacher.load_state_dict(model.student.state_dict())
    model.eval()  # the teacher's BatchNorm is always in eval mode
    assert model.loss(inputs, samples)['loss_l1'] == 0


def test_new_softmax_only_loss_is_refused_by_the_dense_distiller(retina_pair):
    with pytest.raises(ValueError, match=r"loss 'l1' \(SoftmaxL1Loss\) cannot distil the "
                                         r'sigmoid head RetinaHead: .*only for a softmax'):
        MODELS.build(dict(retina_pair, distill_losses=dict(l1=dict(type='TestSoftmaxL1Loss'))))


# ------------------------------------------------------------- loss keys
def test_a_loss_key_that_overwrites_a_student_key_is_refused_at_build_time(retina_pair):
    for name, key in (('cls', 'loss_cls'), ('bbox', 'loss_bbox')):
        with pytest.raises(ValueError, match=f'distill_losses.{name} would write "{key}"'):
            MODELS.build(dict(retina_pair, distill_losses={
                name: dict(type='KDLoss', use_sigmoid=True)}))


def test_student_loss_keys_follow_the_head_modules(retina_pair):
    from mmkd.models.distillers import loss_module_keys
    fcos = copy.deepcopy(get_config('mmdet::fcos/fcos_r50-caffe_fpn_gn-head_1x_coco.py').model)
    init_default_scope('mmdet')
    head = MODELS.build(dict(fcos.bbox_head, _scope_='mmdet'))
    assert loss_module_keys(head) == {'loss_cls', 'loss_bbox', 'loss_centerness'}
    model = MODELS.build(retina_pair)
    assert model.student_loss_keys() == {'loss_cls', 'loss_bbox'}


def test_lightskd_refuses_a_loss_named_aux():
    init_default_scope('mmpretrain')
    student = dict(type='ImageClassifier', _scope_='mmpretrain',
                   backbone=dict(type='ResNet_CIFAR', depth=18, stem_channels=8,
                                 base_channels=8, out_indices=(3, )),
                   neck=dict(type='GlobalAveragePooling'),
                   head=dict(type='LinearClsHead', num_classes=C, in_channels=64))
    with pytest.raises(ValueError, match='distill_losses.aux would write "loss_aux"'):
        LightSKD(student, aux_head=dict(type='DRGHead', in_channels=16),
                 distill_losses=dict(aux=dict(type='DRGLoss')))
    # a KD loss serves as DRG: it consumes logits (the auxiliary head is its teacher)
    model = LightSKD(student, aux_head=dict(type='DRGHead', in_channels=16),
                     distill_losses=dict(kd=dict(type='KDLoss', temperature=2.0)))
    assert model.input_of == {'kd': 'logits'}


def test_a_clash_unknown_at_build_time_is_refused_before_any_step():
    model = TinyDistiller(TINY, distill_losses=dict(kd=dict(type='KDLoss')))
    with pytest.raises(ValueError, match=r"\['loss_kd'\] would overwrite the student's own"):
        model.add_distill_losses({'loss_kd': torch.tensor(1.)}, {'loss_kd': torch.tensor(2.)})
    losses = model.add_distill_losses({'loss': torch.tensor(1.)}, {'loss_kd': torch.tensor(2.)})
    assert losses == {'loss': torch.tensor(1.), 'loss_kd': torch.tensor(2.)}
    model.distill_loss_scale = 0.25
    assert model.add_distill_losses({}, {'loss_kd': torch.tensor(2.)})['loss_kd'] == 0.5


# ------------------------------------------------------------- build hooks
@MODELS.register_module(name='TestTinyNet', force=True)
class TinyNet(nn.Module):
    """A linear classifier with MMEngine's model interface (enough for the bases)."""

    def __init__(self, num_classes: int = C) -> None:
        super().__init__()
        from mmengine.model import BaseDataPreprocessor
        self.data_preprocessor = BaseDataPreprocessor()
        self.fc = nn.Linear(3, num_classes)

    def forward(self, inputs, data_samples=None, mode='tensor'):
        return self.fc(inputs)


TINY = dict(type='mmkd.TestTinyNet')


class TinyDistiller(TeacherStudentDistiller):
    """Records its hooks; ``option`` is set after ``super().__init__``."""

    def __init__(self, student, teacher=TINY, distill_losses=None, option=1):
        super().__init__(student, teacher, distill_losses=distill_losses)
        self.option = option
        self.calls = []

    def check_models(self):
        self.calls.append(('check_models', self.option))
        if self.student.fc.out_features != self.teacher.fc.out_features:
            raise ValueError('classes differ')

    def check_loss(self, name, loss):
        self.calls.append(('check_loss', name, self.input_of[name]))

    def loss(self, inputs, data_samples):
        s, t = self.student(inputs), self.teacher(self.teacher_inputs(inputs))
        losses = {'loss': s.square().mean()}
        return self.add_distill_losses(losses, {f'loss_{n}': loss(s, t)
                                                for n, loss in self.distill_losses.items()})


def test_hooks_run_once_in_order_after_the_subclass_constructor():
    model = TinyDistiller(TINY, distill_losses=dict(a=dict(type='KDLoss'),
                                                    b=dict(type='DISTLoss')), option=7)
    assert model.calls == [('check_models', 7), ('check_loss', 'a', 'logits'),
                           ('check_loss', 'b', 'logits')]
    with pytest.raises(ValueError, match='classes differ'):
        TinyDistiller(dict(TINY, num_classes=3))


def test_only_the_student_learns_and_predict_uses_it_alone():
    torch.manual_seed(0)
    model = TinyDistiller(TINY, distill_losses=dict(kd=dict(type='KDLoss')))
    model.train()
    assert not model.teacher.training
    assert all(not p.requires_grad for p in model.teacher.parameters())
    x = torch.randn(5, 3)
    optim = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1))
    log = model.train_step(dict(inputs=x), optim)
    assert set(log) == {'loss', 'loss_kd'}
    assert torch.equal(model(x, mode='tensor'), model.student(x))


def test_student_distiller_initialises_its_own_modules():
    class WithHead(StudentDistiller):
        def __init__(self, student):
            super().__init__(student)
            self.extra = nn.Linear(2, 2)

    model = WithHead(TINY)
    assert not hasattr(model, 'teacher') and model.input_of == {}


def test_renormalisation_follows_device_and_dtype_and_is_not_saved():
    norm = Renormalise(torch.tensor([1., 2., 3.]), torch.tensor([2., 2., 2.]), True,
                       torch.zeros(3), torch.ones(3))
    x = torch.randn(1, 3, 2, 2)
    expected = (x * 2 + torch.tensor([1., 2., 3.]).view(1, 3, 1, 1)).flip(1)
    torch.testing.assert_close(norm(x), expected)
    norm = norm.double()
    assert norm.mean_s.dtype == torch.float64
    assert norm(x.double()).dtype == torch.float64
    assert norm.state_dict() == {}


def test_kd_is_what_the_tiny_distiller_computes():
    torch.manual_seed(0)
    model = TinyDistiller(TINY, distill_losses=dict(kd=dict(type='KDLoss', temperature=2.0)))
    x = torch.randn(5, 3)
    expected = kd_loss(model.student(x), model.teacher(x), 2.0).mean()
    torch.testing.assert_close(model.loss(x, None)['loss_kd'], expected)
    assert isinstance(model.distill_losses['kd'], KDLoss)


def classifier(num_classes=4, mean=(128., 128., 128.), to_rgb=False):
    return tiny_classifier(num_classes, preprocessor=dict(mean=list(mean), to_rgb=to_rgb))


def test_rekd_k_beyond_the_classes_is_refused_at_build_time():
    init_default_scope('mmpretrain')
    with pytest.raises(ValueError, match=r'ClsDistiller: distill_losses.rekd: ReKDLoss: k=5 '
                                         'exceeds the 4 classes'):
        ClsDistiller(classifier(), classifier(), distill_losses=dict(
            rekd=dict(type='ReKDLoss', k=5)))
    ClsDistiller(classifier(), classifier(), distill_losses=dict(
        rekd=dict(type='ReKDLoss', k=4)))


def test_a_distiller_moved_to_float64_trains_with_a_differently_normalised_teacher():
    init_default_scope('mmpretrain')
    from mmpretrain.structures import DataSample
    torch.manual_seed(0)
    model = ClsDistiller(classifier(), classifier(mean=(100., 110., 120.), to_rgb=True),
                         distill_losses=dict(kd=dict(type='KDLoss')))
    assert model.renormalise is not None and model.renormalise.flip
    model = model.double().train()
    assert model.renormalise.mean_t.dtype == torch.float64
    samples = [DataSample().set_gt_label(i % 4) for i in range(2)]
    losses = model.loss(torch.randn(2, 3, 32, 32, dtype=torch.float64), samples)
    assert losses['loss_kd'].dtype == torch.float64 and torch.isfinite(losses['loss_kd'])


def test_padding_reaches_the_teacher_as_its_own_padding_value():
    from mmengine.structures import BaseDataElement
    norm = Renormalise(torch.zeros(3), torch.full((3, ), 2.), False, torch.ones(3),
                       torch.ones(3), pad_value=7.)
    x = torch.zeros(2, 3, 4, 5)  # normalised student batch, padded with 0
    samples = [BaseDataElement(metainfo=dict(img_shape=(3, 5))),
               BaseDataElement(metainfo=dict(img_shape=(4, 2)))]
    out = norm(x, samples)
    assert (out[0, :, 3:] == 7).all() and (out[0, :, :3] == -1).all()  # (0 * 2 + 0 - 1) / 1
    assert (out[1, :, :, 2:] == 7).all() and (out[1, :, :, :2] == -1).all()
    assert (norm(x) == -1).all()  # without samples (classification): no padding
