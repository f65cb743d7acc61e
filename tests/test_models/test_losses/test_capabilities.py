"""The declared capabilities of every registered loss, checked against its behaviour.

Distillers decide whether a loss fits a head only from the class attributes of
:class:`~mmkd.models.losses.DistillLossInfo` (``inputs``, ``requires_target``,
``sigmoid_capable`` / ``use_sigmoid``, ``row_wise``). Every loss in the mmkd
registry (timm style: a new loss is picked up without editing this file) is
built with its defaults and each attribute is checked in both directions: what
is declared works, and what is not declared does not (or, for the
normalisation axis of ``'logits'`` / ``'logit_maps'``, behaves otherwise).
:func:`test_a_wrong_attribute_fails_the_checks` shows that every check catches
a wrong declaration.
"""
import pytest
import torch
import torch.nn as nn

import mmkd.models.losses  # noqa: F401  (fills the registry)
from mmkd.models.losses import INPUT_KINDS, BaseDistillLoss, DistillLossInfo
from mmkd.registry import MODELS

C = 7  # classes (ReKD's default k=5 needs at least 5)

#: Errors a loss raises when it is called with inputs it does not consume.
REFUSED = (TypeError, ValueError, AttributeError, RuntimeError)


def registered_losses():
    """Every class of the mmkd registry that declares loss capabilities.

    Only classes of the mmkd package: test modules may register toy losses of
    their own in the same registry (their declarations are their business).
    """
    return sorted(
        name for name, cls in MODELS.module_dict.items()
        if isinstance(cls, type) and cls.__module__.startswith('mmkd.') and (
            issubclass(cls, DistillLossInfo) or hasattr(cls, 'inputs')))


LOSSES = registered_losses()
SIGMOID_LOSSES = [name for name in LOSSES if MODELS.module_dict[name].sigmoid_capable]
VARIANTS = [(name, False) for name in LOSSES] + [(name, True) for name in SIGMOID_LOSSES]


#: Kinds called with the 'logits' signature.
SAME_SIGNATURE = {'logits', 'logit_maps', 'box_distributions'}


def variant_id(v):
    return f'{v[0]}-sigmoid' if v[1] else v[0]


def make(cls, sigmoid=False):
    return cls(use_sigmoid=True) if sigmoid else cls()


# ---------------------------------------------------------------- inputs by kind
def randn(g, *shape, grad=False):
    return (torch.randn(*shape, generator=g, dtype=torch.float64) * 2).requires_grad_(grad)


def kind_inputs(kind, dense=False, seed=0):
    """(inputs, target) for the call signature of ``kind``.

    ``inputs`` are the tensors (and classifiers) of the call, the student's
    first; for ``'student_logits'`` the current batch and the previous one.
    """
    g = torch.Generator().manual_seed(seed)
    if kind == 'box_distributions':  # rows of one box side's logits over 17 integral bins
        # (the labels only mask rows: any class)
        return [randn(g, 8, 17, grad=True), randn(g, 8, 17)], torch.randint(0, C, (8, ),
                                                                            generator=g)
    if kind in ('logits', 'logit_maps'):
        shape = (2, C, 3, 5) if dense or kind == 'logit_maps' else (4, C)
        target = torch.randint(0, C, (shape[0], ) + shape[2:], generator=g)
        return [randn(g, *shape, grad=True), randn(g, *shape)], target
    if kind == 'features':  # student and teacher maps of different sizes
        torch.manual_seed(seed)
        cls_s, cls_t = nn.Linear(8, C).double(), nn.Linear(16, C).double()
        feats = [randn(g, 4, 8, 4, 4, grad=True), randn(g, 4, 16, 2, 2)]
        return feats + [cls_s, cls_t], torch.randint(0, C, (4, ), generator=g)
    if kind == 'views':
        views = [randn(g, 4, C, 5, grad=True), randn(g, 4, C, 5)]
        return views, torch.randint(0, C, (4, ), generator=g)
    assert kind == 'student_logits', kind
    return [randn(g, 4, C, grad=True), randn(g, 4, C)], None


def call(loss, kind, inputs, target=None, **kwargs):
    """Calls ``loss`` with the signature of ``kind``; ``target=None`` leaves it out."""
    if kind in ('logits', 'logit_maps', 'box_distributions'):
        return loss(inputs[0], inputs[1], target, **kwargs)
    if kind == 'features':
        feats_S, feats_T, cls_S, cls_T = inputs
        return loss(feats_S, feats_T, target, cls_S, cls_T, **kwargs)
    if kind == 'views':
        return loss.loss_on_views(inputs[0], inputs[1], target, **kwargs)
    preds, prev = inputs
    loss(prev, **kwargs)  # forward(preds) twice: the first batch is the partner of the next
    return loss(preds, **kwargs)


def rows_of(kind, inputs, target):
    """(inputs, target) of each row alone, in the order of the row map.

    Rows of dense inputs are pixels, as ``(1, C, 1, 1)`` maps.
    """
    first = inputs[0]
    if kind in ('logits', 'logit_maps') and first.dim() == 4:
        for n, h, w in torch.cartesian_prod(*(torch.arange(k) for k in row_shape(first))):
            pixel = (slice(n, n + 1), slice(None), slice(h, h + 1), slice(w, w + 1))
            yield ([x[pixel] for x in inputs],
                   None if target is None else target[n:n + 1, h:h + 1, w:w + 1])
        return
    for i in range(first.shape[0]):
        yield ([x[i:i + 1] if isinstance(x, torch.Tensor) else x for x in inputs],
               None if target is None else target[i:i + 1])


def row_shape(x):
    return (x.shape[0], ) + tuple(x.shape[2:])


def run(loss, kind, dense=False, with_target=True, **kwargs):
    inputs, target = kind_inputs(kind, dense)
    return call(loss, kind, inputs, target if with_target else None, **kwargs), inputs


def assert_runs(loss, kind, dense=False, with_target=True):
    value, inputs = run(loss, kind, dense, with_target)
    assert value.dim() == 0 and torch.isfinite(value), (kind, value)
    value.backward()
    assert inputs[0].grad is not None and torch.isfinite(inputs[0].grad).all()
    return value


def kinds_and_shapes(cls):
    """(kind, dense) pairs to check: 'logits' on (N, C) and on (N, C, H, W)."""
    return [(kind, dense) for kind in cls.inputs
            for dense in ((False, True) if kind == 'logits' else (False, ))]


# ----------------------------------------------------------------------- checks
def check_inputs(cls, sigmoid=False):
    """Every declared kind runs; every other kind is refused."""
    assert isinstance(cls.inputs, tuple) and cls.inputs
    assert set(cls.inputs) <= set(INPUT_KINDS)
    for kind in INPUT_KINDS:
        if kind in cls.inputs:
            for _, dense in [x for x in kinds_and_shapes(cls) if x[0] == kind]:
                assert_runs(make(cls, sigmoid), kind, dense)
        elif kind in SAME_SIGNATURE and set(cls.inputs) & SAME_SIGNATURE:
            # (N, C, H, W) maps and (N, n+1) box-side rows are called like 'logits': the
            # distiller, not the call, tells them apart (see check_normalisation_axis).
            continue
        else:
            with pytest.raises(REFUSED):
                run(make(cls, sigmoid), kind)


def shifted(x, per):
    """``x`` plus a random constant per row (over classes) or per channel map (over space)."""
    g = torch.Generator().manual_seed(7)
    shape = (x.shape[0], 1) + x.shape[2:] if per == 'row' else x.shape[:2] + (1, ) * (x.dim() - 2)
    return x + 5 * torch.randn(shape, generator=g, dtype=x.dtype)


def check_normalisation_axis(cls, sigmoid=False):
    """'logits' are softmaxes over classes, 'logit_maps' over space (per channel).

    Adding a constant to the student logits of a row (over its classes) leaves a
    softmax over classes unchanged; adding one to a channel map (over space)
    leaves a softmax over space unchanged. Each kind is invariant to its own
    shift and not to the other one. (Sigmoid classes have no such invariance.)
    """
    kinds = [k for k in ('logits', 'logit_maps') if k in cls.inputs]
    if not kinds or sigmoid:
        return
    assert len(kinds) == 1, 'a loss normalises over classes or over space, not both'
    own, other = ('row', 'map') if kinds[0] == 'logits' else ('map', 'row')
    loss = make(cls)
    (s, t), target = kind_inputs(kinds[0], dense=True)
    s = s.detach()
    value = loss(s, t, target)
    torch.testing.assert_close(loss(shifted(s, own), t, target), value, rtol=1e-9, atol=1e-12)
    assert not torch.allclose(loss(shifted(s, other), t, target), value, rtol=1e-6, atol=0)


def check_requires_target(cls, sigmoid=False):
    """A loss that requires ``target`` uses the labels; one that does not ignores them.

    (Labels only mask rows equal to ``ignore_index``, which none is here.)
    """
    for kind, dense in kinds_and_shapes(cls):
        if cls.requires_target:
            with pytest.raises(ValueError, match='target'):
                run(make(cls, sigmoid), kind, dense, with_target=False)
        else:
            without = assert_runs(make(cls, sigmoid), kind, dense, with_target=False)
        if kind == 'student_logits':
            continue  # its signature has no labels
        inputs, target = kind_inputs(kind, dense)
        value = call(make(cls, sigmoid), kind, inputs, target)
        other = call(make(cls, sigmoid), kind, inputs, (target + 1) % C)
        if cls.requires_target:
            assert not torch.allclose(value, other), 'the labels do not change the loss'
        else:
            torch.testing.assert_close(other, value, rtol=1e-12, atol=0)
            torch.testing.assert_close(without, value, rtol=1e-12, atol=0)


def check_sigmoid(cls, sigmoid=False):
    """``use_sigmoid`` is off by default; sigmoid-capable losses have the switch."""
    assert make(cls).use_sigmoid is False
    if not cls.sigmoid_capable:
        with pytest.raises(TypeError):
            cls(use_sigmoid=True)
        return
    loss = cls(use_sigmoid=True)
    assert loss.use_sigmoid is True
    for kind, dense in kinds_and_shapes(cls):
        value = assert_runs(cls(use_sigmoid=True), kind, dense)
        # the switch changes the loss (Bernoulli classes, not a softmax)
        assert not torch.allclose(value, run(make(cls), kind, dense)[0])


def check_row_wise(cls, sigmoid=False):
    """Row-wise: the value is the mean of the values of the rows taken alone, and
    'none' returns them. Not row-wise: it is not, and 'none' is refused."""
    for kind, dense in kinds_and_shapes(cls):
        inputs, target = kind_inputs(kind, dense)
        target = target if cls.requires_target else None
        mean = call(make(cls, sigmoid), kind, inputs, target)
        alone = torch.stack([
            call(make(cls, sigmoid), kind, row_inputs, row_target)
            for row_inputs, row_target in rows_of(kind, inputs, target)])
        if not cls.row_wise:
            assert not torch.allclose(alone.mean(), mean), 'the rows are independent'
            with pytest.raises(ValueError, match="reduction='none'"):
                call(make(cls, sigmoid), kind, inputs, target, reduction_override='none')
            with pytest.raises(ValueError, match="reduction='none'"):
                cls(reduction='none', **({'use_sigmoid': True} if sigmoid else {}))
            continue
        torch.testing.assert_close(alone.mean(), mean, rtol=1e-9, atol=1e-12)
        rows = call(make(cls, sigmoid), kind, inputs, target, reduction_override='none')
        first = inputs[0]
        want = row_shape(first) if kind in ('logits', 'logit_maps') else (first.shape[0], )
        assert rows.shape == want, (kind, rows.shape)
        torch.testing.assert_close(rows.flatten(), alone, rtol=1e-9, atol=1e-12)
        assert rows.abs().sum() > 0


CHECKS = [check_inputs, check_normalisation_axis, check_requires_target, check_sigmoid,
          check_row_wise]


# ------------------------------------------------------------------------ tests
def test_the_registry_holds_every_loss():
    assert {'KDLoss', 'DISTLoss', 'DKDLoss', 'ReKDLoss', 'RLDLoss', 'SDDLoss', 'DRGLoss',
            'DSRLoss', 'ChannelWiseDivergence', 'LDLoss'} <= set(LOSSES)
    assert 'DRGHead' not in LOSSES  # a head, not a loss


@pytest.mark.parametrize('check', CHECKS, ids=lambda c: c.__name__)
@pytest.mark.parametrize('variant', VARIANTS, ids=variant_id)
def test_declared_capabilities_match_behaviour(variant, check):
    name, sigmoid = variant
    check(MODELS.module_dict[name], sigmoid)


#: The declarations of the known losses, stated by hand.
EXPECTED = dict(
    KDLoss=(('logits', ), False, True, True),
    DISTLoss=(('logits', ), False, True, False),
    DKDLoss=(('logits', ), True, False, True),
    ReKDLoss=(('logits', ), False, False, True),
    RLDLoss=(('logits', ), True, False, True),
    SDDLoss=(('features', 'views'), True, False, True),
    DRGLoss=(('logits', ), False, False, True),
    DSRLoss=(('student_logits', ), False, False, True),
    ChannelWiseDivergence=(('logit_maps', ), False, False, False),
    LDLoss=(('box_distributions', ), False, False, True),
)


@pytest.mark.parametrize('name', sorted(EXPECTED))
def test_known_declarations(name):
    cls = MODELS.module_dict[name]
    got = (cls.inputs, cls.requires_target, cls.sigmoid_capable, cls.row_wise)
    assert got == EXPECTED[name]
    assert issubclass(cls, DistillLossInfo)
    assert make(cls).use_sigmoid is False


# Wrong declarations, one per attribute and direction: every one must fail a check.
def mutant(cls, **attrs):
    return type(f'Wrong{cls.__name__}', (cls, ), attrs)


def registered(name):
    return MODELS.module_dict[name]


MUTANTS = [
    ('KD-as-maps', lambda: mutant(registered('KDLoss'), inputs=('logit_maps', )),
     check_normalisation_axis),
    ('CWD-as-logits', lambda: mutant(registered('ChannelWiseDivergence'), inputs=('logits', )),
     check_inputs),
    ('KD-as-features', lambda: mutant(registered('KDLoss'), inputs=('features', )),
     check_inputs),
    ('SDD-without-views', lambda: mutant(registered('SDDLoss'), inputs=('features', )),
     check_inputs),
    ('SDD-as-logits', lambda: mutant(registered('SDDLoss'), inputs=('logits', )), check_inputs),
    ('DSR-as-logits', lambda: mutant(registered('DSRLoss'), inputs=('logits', )), check_inputs),
    ('KD-needs-target', lambda: mutant(registered('KDLoss'), requires_target=True),
     check_requires_target),
    ('DKD-without-target', lambda: mutant(registered('DKDLoss'), requires_target=False),
     check_requires_target),
    ('SDD-without-target', lambda: mutant(registered('SDDLoss'), requires_target=False),
     check_requires_target),
    ('KD-no-sigmoid', lambda: mutant(registered('KDLoss'), sigmoid_capable=False), check_sigmoid),
    ('DKD-sigmoid', lambda: mutant(registered('DKDLoss'), sigmoid_capable=True), check_sigmoid),
    ('DIST-row-wise', lambda: mutant(registered('DISTLoss'), row_wise=True), check_row_wise),
    ('CWD-row-wise', lambda: mutant(registered('ChannelWiseDivergence'), row_wise=True),
     check_row_wise),
    ('KD-not-row-wise', lambda: mutant(registered('KDLoss'), row_wise=False), check_row_wise),
    ('SDD-not-row-wise', lambda: mutant(registered('SDDLoss'), row_wise=False),
     check_row_wise),
]


@pytest.mark.parametrize('make_cls,check', [m[1:] for m in MUTANTS],
                         ids=[m[0] for m in MUTANTS])
def test_a_wrong_attribute_fails_the_checks(make_cls, check):
    cls = make_cls()
    with pytest.raises((AssertionError, pytest.fail.Exception) + REFUSED):
        check(cls)


# ------------------------------------------------------------ declared kinds only
def test_an_unknown_input_kind_is_refused():
    with pytest.raises(TypeError, match=r"PixelLoss declares an unknown input kind 'pixels'"):

        class PixelLoss(BaseDistillLoss):
            inputs = ('logits', 'pixels')

    with pytest.raises(TypeError, match=r"OddLoss declares an unknown input kind 'Logits'"):

        class OddLoss(DistillLossInfo, nn.Module):  # the mixin alone checks too
            inputs = ('Logits', )


@pytest.mark.parametrize('inputs', ['logits', (), ['logits']])
def test_inputs_must_be_a_non_empty_tuple(inputs):
    with pytest.raises(TypeError, match=r'BadLoss\.inputs must be a non-empty tuple'):
        type('BadLoss', (BaseDistillLoss, ), dict(inputs=inputs))


def test_every_known_kind_may_be_declared():
    cls = type('AllKinds', (DistillLossInfo, ), dict(inputs=INPUT_KINDS))
    assert cls.inputs == INPUT_KINDS
    assert INPUT_KINDS == ('logits', 'logit_maps', 'features', 'views', 'student_logits',
                           'box_distributions')
