"""SegDistiller: mmseg EncoderDecoder students and teachers, per-pixel losses.

Unit tests use tiny ResNetV1c segmentors on random tensors; the shipped
Cityscapes configs are built at a 64 x 128 crop on the generated shapes data
and run for one training step. Nothing is downloaded.
"""
import copy
import glob
import math
import os.path as osp

import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config, ConfigDict
from mmengine.hub import get_config
from mmengine.model import revert_sync_batchnorm
from mmengine.optim import OptimWrapper
from mmengine.registry import DefaultScope
from mmengine.runner import Runner
from mmengine.structures import PixelData

from mmkd.datasets import seg_overrides
from mmkd.models.distillers.seg_distiller import SegDistiller, seg_labels
from mmkd.models.losses import KDLoss
from mmkd.recipes import no_pretrained
from mmkd.registry import MODELS

pytest.importorskip('mmseg')
from mmseg.structures import SegDataSample  # noqa: E402

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))
SEG_CONFIGS = sorted(
    p for p in glob.glob(osp.join(ROOT, 'configs', '*', '*_cityscapes.py'))
    if osp.basename(p).startswith(('pspnet_', 'deeplabv3_')))
NUM_CLASSES = 7
CROP = (64, 128)
PER_PIXEL_LOSSES = dict(
    kd=dict(type='KDLoss', temperature=2.0),
    dist=dict(type='DISTLoss'),
    dkd=dict(type='DKDLoss', beta=0.5, temperature=1.0),
    rekd=dict(type='ReKDLoss', k=3, temperature=1.0),
    rld=dict(type='RLDLoss', beta=0.5, temperature=1.0),
    cwd=dict(type='ChannelWiseDivergence', tau=1.0, loss_weight=5.0))


@pytest.fixture(autouse=True)
def mmseg_scope():
    with DefaultScope.overwrite_default_scope('mmseg'):
        yield


def tiny_segmentor(num_classes=NUM_CLASSES, width=8, strides=(1, 2, 1, 1),
                   dilations=(1, 1, 2, 4), aux=True, ignore_index=255):
    """A ResNetV1c-18 segmentor with ``width`` base channels (output stride 8 by default)."""
    norm = dict(type='BN', requires_grad=True)

    def head(in_index, in_channels, loss_weight):
        return dict(type='FCNHead', in_channels=in_channels, in_index=in_index, channels=16,
                    num_convs=1, concat_input=False, dropout_ratio=0.1,
                    num_classes=num_classes, norm_cfg=norm, align_corners=False,
                    ignore_index=ignore_index,
                    loss_decode=dict(type='CrossEntropyLoss', loss_weight=loss_weight))

    return dict(
        type='EncoderDecoder',
        data_preprocessor=dict(type='SegDataPreProcessor', mean=[123.675, 116.28, 103.53],
                               std=[58.395, 57.12, 57.375], bgr_to_rgb=True, pad_val=0,
                               seg_pad_val=255, size=CROP),
        backbone=dict(type='ResNetV1c', depth=18, base_channels=width, stem_channels=width,
                      out_indices=(0, 1, 2, 3), dilations=dilations, strides=strides,
                      norm_cfg=norm, contract_dilation=True),
        decode_head=head(3, 8 * width, 1.0),
        auxiliary_head=head(2, 4 * width, 0.4) if aux else None,
        train_cfg=dict(), test_cfg=ConfigDict(mode='whole'))


def build(losses=None, student=None, teacher=None, **kwargs):
    return SegDistiller(student or tiny_segmentor(), teacher or tiny_segmentor(width=16),
                        distill_losses=losses if losses is not None else dict(
                            kd=dict(type='KDLoss', temperature=2.0)), **kwargs)


def batch(labels=None, n=2, seed=0):
    """Normalised inputs ``(n, 3, 64, 128)`` and data samples with ``gt_sem_seg``."""
    g = torch.Generator().manual_seed(seed)
    inputs = torch.randn(n, 3, *CROP, generator=g)
    if labels is None:
        labels = torch.randint(0, NUM_CLASSES, (n, 1, *CROP), generator=g)
        labels[:, :, :4] = 255  # an ignored band, as the shapes' borders
    samples = []
    for i in range(n):
        ds = SegDataSample(metainfo=dict(img_shape=CROP, pad_shape=CROP, ori_shape=CROP))
        ds.gt_sem_seg = PixelData(data=labels[i].long())
        samples.append(ds)
    return inputs, samples


def record_calls(module):
    """Replaces ``module.forward`` by a wrapper that records its arguments."""
    calls, forward = [], module.forward

    def wrapper(*args, **kwargs):
        calls.append((args, kwargs))
        return forward(*args, **kwargs)

    module.forward = wrapper
    return calls


# --------------------------------------------------------------------- losses
def test_student_losses_keep_keys_and_values():
    model = build()
    model.train()
    inputs, samples = batch()
    torch.manual_seed(1)
    losses = model.loss(inputs, samples)
    torch.manual_seed(1)  # the same dropout masks for the student alone
    alone = model.student.loss(inputs, samples)
    assert set(losses) == set(alone) | {'loss_kd'}
    for key, value in alone.items():
        assert torch.equal(losses[key], value), key
    assert losses['loss_kd'] > 0


def test_distillation_compares_decoder_logits_with_pixel_labels():
    model = build()
    model.train()
    calls = record_calls(model.distill_losses['kd'])
    inputs, samples = batch()
    losses = model.loss(inputs, samples)
    (preds_S, preds_T, target), _ = calls[0]
    assert preds_S.shape == (2, NUM_CLASSES, 8, 16)  # decoder resolution: 1/8
    assert preds_S.requires_grad and not preds_T.requires_grad
    with torch.no_grad():
        expected_T = model.teacher.decode_head(model.teacher.extract_feat(inputs))
    torch.testing.assert_close(preds_T, expected_T)
    labels = torch.stack([s.gt_sem_seg.data for s in samples])[:, 0]
    assert torch.equal(target, labels[:, ::8, ::8])  # nearest: the top-left pixel of 8x8
    assert (target == 255).any()
    torch.testing.assert_close(losses['loss_kd'], KDLoss(temperature=2.0)(*calls[0][0]))
    assert len(calls) == 1  # aux distillation is off by default


def test_all_distillation_losses_run_per_pixel():
    model = build(losses=copy.deepcopy(PER_PIXEL_LOSSES))
    model.train()
    losses = model.loss(*batch())
    for name in PER_PIXEL_LOSSES:
        assert torch.isfinite(losses[f'loss_{name}']) and losses[f'loss_{name}'] > 0, name
    sum(v for k, v in losses.items() if 'loss' in k).backward()


def test_all_ignored_batch_trains_without_nan():
    model = build(losses=copy.deepcopy(PER_PIXEL_LOSSES), aux_distill_weight=0.4)
    model.train()
    inputs, samples = batch(labels=torch.full((2, 1, *CROP), 255))
    losses = model.loss(inputs, samples)
    for key, value in losses.items():
        if 'loss' in key:
            assert torch.isfinite(value), key
    for name in PER_PIXEL_LOSSES:
        assert losses[f'loss_{name}'].item() == 0.0, name
        assert losses[f'loss_{name}_aux'].item() == 0.0, name
    total = sum(v for k, v in losses.items() if 'loss' in k)
    total.backward()
    grads = [p.grad for p in model.student.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_auxiliary_head_distillation_has_its_own_weight():
    model = build(aux_distill_weight=0.4)
    model.train()
    calls = record_calls(model.distill_losses['kd'])
    losses = model.loss(*batch())
    assert {'loss_kd', 'loss_kd_aux', 'aux.loss_ce', 'decode.loss_ce'} <= set(losses)
    (aux_S, aux_T, target), _ = calls[1]
    with torch.no_grad():
        feats = model.teacher.extract_feat(batch()[0])
        torch.testing.assert_close(aux_T, model.teacher.auxiliary_head(feats))
    expected = 0.4 * KDLoss(temperature=2.0)(aux_S, aux_T, target)
    torch.testing.assert_close(losses['loss_kd_aux'], expected)
    # the schedule's scale applies to both (model in eval: no dropout, same logits)
    model.eval()
    full = model.loss(*batch())
    model.distill_loss_scale = 0.25
    scaled = model.loss(*batch())
    for key in ('loss_kd', 'loss_kd_aux'):
        torch.testing.assert_close(scaled[key], 0.25 * full[key])
    torch.testing.assert_close(scaled['decode.loss_ce'], full['decode.loss_ce'])


def test_teacher_logits_are_resized_bilinearly():
    # Teacher at output stride 16, student at 8.
    teacher = tiny_segmentor(width=16, strides=(1, 2, 2, 1), dilations=(1, 1, 1, 2))
    model = build(teacher=teacher)
    model.train()
    calls = record_calls(model.distill_losses['kd'])
    inputs, samples = batch()
    model.loss(inputs, samples)
    (preds_S, preds_T, _), _ = calls[0]
    with torch.no_grad():
        raw = model.teacher.decode_head(model.teacher.extract_feat(inputs))
    assert raw.shape[-2:] == (4, 8) and preds_T.shape == preds_S.shape
    torch.testing.assert_close(
        preds_T, F.interpolate(raw, size=(8, 16), mode='bilinear', align_corners=False))


def test_labels_resized_with_nearest():
    label = torch.tensor([[0, 1, 2, 3, 4, 5],
                          [6, 7, 8, 9, 10, 11],
                          [12, 13, 14, 15, 16, 17],
                          [18, 19, 255, 21, 22, 23]])
    ds = SegDataSample()
    ds.gt_sem_seg = PixelData(data=label[None])
    out = seg_labels([ds], (2, 3))
    assert out.dtype == torch.int64
    assert torch.equal(out, torch.tensor([[[0, 2, 4], [12, 14, 16]]]))
    # the ignore label survives (no averaging) and the same size is a no-op
    assert torch.equal(seg_labels([ds], (4, 3))[0, 3], torch.tensor([18, 255, 22]))
    assert torch.equal(seg_labels([ds], (4, 6))[0], label)


# -------------------------------------------------------------------- teacher
def test_teacher_frozen_in_eval_and_never_computes_losses():
    model = build(aux_distill_weight=0.0)
    teacher = model.teacher
    counts = dict(loss=0, loss_by_feat=0, aux_forward=0)
    for name in ('loss', 'loss_by_feat'):
        for head in (teacher.decode_head, teacher.auxiliary_head):
            original = getattr(head, name)

            def counted(*args, _name=name, _original=original, **kwargs):
                counts[_name] += 1
                return _original(*args, **kwargs)

            setattr(head, name, counted)
    teacher.auxiliary_head.register_forward_hook(
        lambda *_: counts.__setitem__('aux_forward', counts['aux_forward'] + 1))
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    optim = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1))
    model.train()
    assert not teacher.training and all(not m.training for m in teacher.modules())
    assert all(not p.requires_grad for p in teacher.parameters())
    inputs, samples = batch()
    model.train_step(dict(inputs=list(inputs * 50 + 120), data_samples=samples), optim)
    assert counts == dict(loss=0, loss_by_feat=0, aux_forward=0)
    for k, v in teacher.state_dict().items():
        assert torch.equal(v, before[k]), k  # weights and BN statistics unchanged
    assert all(p.grad is None for p in teacher.parameters())


def test_predict_uses_the_student_alone():
    model = build()
    model.eval()
    inputs, samples = batch()
    out = model(inputs, copy.deepcopy(samples), mode='predict')
    alone = model.student(inputs, copy.deepcopy(samples), mode='predict')
    torch.testing.assert_close(out[0].seg_logits.data, alone[0].seg_logits.data)


# ----------------------------------------------------------------- build time
def test_class_count_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match=r'student predicts 7 classes but the teacher 5'):
        build(teacher=tiny_segmentor(num_classes=5))
    teacher = tiny_segmentor()
    teacher['auxiliary_head']['num_classes'] = 5
    build(teacher=copy.deepcopy(teacher))  # aux heads are not compared when unused
    with pytest.raises(ValueError, match='auxiliary head aux num_classes'):
        build(teacher=teacher, aux_distill_weight=0.4)


def test_refused_configurations():
    with pytest.raises(ValueError, match=r'SDDLoss.*consumes .*gives \(.logits., .logit_maps.\)'):
        build(losses=dict(sdd=dict(type='SDDLoss')))
    with pytest.raises(ValueError, match='ignore_index=0 but the student decode head ignores 255'):
        build(losses=dict(kd=dict(type='KDLoss', ignore_index=0)))
    with pytest.raises(ValueError, match='same number of auxiliary heads'):
        build(teacher=tiny_segmentor(aux=False), aux_distill_weight=0.4)
    with pytest.raises(ValueError, match='aux_distill_weight must be >= 0'):
        build(aux_distill_weight=-1.0)
    with pytest.raises(TypeError, match='must be an mmseg EncoderDecoder'):
        build(teacher=dict(_scope_='mmpretrain', type='ImageClassifier',
                           backbone=dict(type='ResNet', depth=18)))


def test_registered_and_built_from_a_config_dict():
    model = MODELS.build(dict(type='mmkd.SegDistiller', student=tiny_segmentor(),
                              teacher=tiny_segmentor(width=16), aux_distill_weight=0.4,
                              distill_losses=dict(cwd=dict(type='ChannelWiseDivergence'))))
    assert isinstance(model, SegDistiller) and model.aux_distill_weight == 0.4


# ------------------------------------------------------ the shipped configs
def synthetic_config(path, info, crop=CROP):
    """A shipped distillation config on the generated data: 7 classes, small crop."""
    cfg = Config.fromfile(path)
    cfg.merge_from_dict(seg_overrides(info, crop=crop, scale=(128, 64), batch_size=2,
                                      max_iters=1))
    heads = dict(decode_head=dict(num_classes=NUM_CLASSES),
                 auxiliary_head=dict(num_classes=NUM_CLASSES))
    # The teacher is a config string: replace it by its model dict, with 7 classes.
    teacher = get_config(cfg.model.teacher).model.to_dict()
    for head in heads:
        teacher[head]['num_classes'] = NUM_CLASSES
    cfg.merge_from_dict(dict(model=dict(
        student=dict(heads, data_preprocessor=dict(size=crop)),
        teacher=dict(teacher, _delete_=True), teacher_ckpt=None)))
    no_pretrained(cfg.model)
    return cfg


@pytest.fixture(scope='module')
def seg_batch(seg_data):
    cfg = synthetic_config(SEG_CONFIGS[0], seg_data)
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope('mmseg'):
        return next(iter(Runner.build_dataloader(cfg.train_dataloader)))


def test_all_segmentation_configs_are_tested():
    names = sorted(osp.relpath(p, osp.join(ROOT, 'configs')) for p in SEG_CONFIGS)
    assert names == sorted(f'{m}/{a}_r101_r18_cityscapes.py'
                           for m in ('kd', 'dist', 'dkd', 'rekd', 'rld', 'cwd')
                           for a in ('pspnet', 'deeplabv3'))


@pytest.mark.parametrize('path', SEG_CONFIGS, ids=lambda p: osp.relpath(p, ROOT))
def test_config_builds_and_trains_one_step(path, seg_data, seg_batch):
    raw = Config.fromfile(path)
    assert raw.model.type == 'mmkd.SegDistiller'
    assert raw.model.teacher_ckpt.startswith('https://download.openmmlab.com/mmsegmentation/')
    assert 'r101-d8' in raw.model.teacher and raw.model.student.backbone.depth == 18
    cfg = synthetic_config(path, seg_data)
    model = revert_sync_batchnorm(MODELS.build(cfg.model))
    optim = OptimWrapper(torch.optim.SGD(model.student.parameters(), lr=0.01))
    teacher_before = {k: v.clone() for k, v in model.teacher.state_dict().items()}
    student_before = model.student.decode_head.conv_seg.weight.detach().clone()
    model.train()
    log = model.train_step(copy.deepcopy(seg_batch), optim)
    names = list(raw.model.distill_losses)
    expected = {'decode.loss_ce', 'aux.loss_ce'} | {f'loss_{n}' for n in names}
    if raw.model.get('aux_distill_weight', 0) > 0:
        expected |= {f'loss_{n}_aux' for n in names}
    assert expected <= set(log)
    assert all(math.isfinite(float(v)) for v in log.values())
    assert all(float(log[f'loss_{n}']) > 0 for n in names)
    assert not torch.equal(model.student.decode_head.conv_seg.weight, student_before)
    assert all(torch.equal(v, teacher_before[k]) for k, v in model.teacher.state_dict().items())
