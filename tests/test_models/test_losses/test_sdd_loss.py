"""SDDLoss: multi-scale local logits, region weights, reduction to the base loss."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from loss_refs import build, ref_dkd, ref_kd

from mmkd.models.losses import dkd_loss, sdd_local_logits, sdd_loss, sdd_region_weights

B, C = 3, 5


def models(seed=0, d_s=6, d_t=8, hw_s=8, hw_t=4):
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    cls_s, cls_t = nn.Linear(d_s, C).double(), nn.Linear(d_t, C).double()
    feat_s = torch.randn(B, d_s, hw_s, hw_s, generator=g, dtype=torch.float64).requires_grad_()
    feat_t = torch.randn(B, d_t, hw_t, hw_t, generator=g, dtype=torch.float64)
    y = torch.randint(0, C, (B, ), generator=g)
    return feat_s, feat_t, cls_s, cls_t, y


def test_local_logits_cells_and_order():
    feat, _, cls, _, _ = models()
    got = sdd_local_logits(feat, cls)  # 8 x 8 map: 4 x 4 grid cells are 2 x 2 blocks
    assert got.shape == (B, C, 21)
    cells = [feat.mean(dim=(2, 3))]
    for i in range(2):  # 2 x 2, row-major
        for j in range(2):
            cells.append(feat[:, :, 4 * i:4 * i + 4, 4 * j:4 * j + 4].mean(dim=(2, 3)))
    for i in range(4):
        for j in range(4):
            cells.append(feat[:, :, 2 * i:2 * i + 2, 2 * j:2 * j + 2].mean(dim=(2, 3)))
    want = torch.stack([cls(c) for c in cells], dim=2)
    torch.testing.assert_close(got, want)


def test_pool_base_none_pools_from_the_map():
    g = torch.Generator().manual_seed(1)
    feat = torch.randn(2, 4, 6, 6, generator=g, dtype=torch.float64)
    cls = nn.Linear(4, C).double()
    direct = sdd_local_logits(feat, cls, (1, 2, 3), pool_base=None)
    want = torch.cat([F.adaptive_avg_pool2d(feat, s).flatten(2) for s in (1, 2, 3)], dim=2)
    torch.testing.assert_close(direct, cls(want.transpose(1, 2)).transpose(1, 2))
    # with H, W divisible by 4 both agree
    feat8 = torch.randn(2, 4, 8, 8, generator=g, dtype=torch.float64)
    torch.testing.assert_close(
        sdd_local_logits(feat8, cls, pool_base=None), sdd_local_logits(feat8, cls, pool_base=4))


def test_region_weights_from_the_teacher():
    y = torch.tensor([0, 1])
    # (B, C=3, N=4) teacher local logits: argmax per cell
    argmax = torch.tensor([[0, 0, 2, 1], [2, 1, 1, 0]])
    local_t = F.one_hot(argmax, 3).transpose(1, 2).double() * 5
    w = sdd_region_weights(local_t, y, complementary_weight=2.0)
    # sample 0: global right; cells 2, 3 wrong -> complementary
    # sample 1: global wrong; cell 1, 2 right -> complementary, cell 3 wrong -> consistent
    torch.testing.assert_close(w, torch.tensor([[1, 1, 2, 2], [1, 2, 2, 1]], dtype=torch.float64))


@pytest.mark.parametrize('base', ['kd', 'dkd'])
def test_matches_reference(base):
    g = torch.Generator().manual_seed(2)
    local_s = torch.randn(B, C, 5, generator=g, dtype=torch.float64) * 2
    local_t = torch.randn(B, C, 5, generator=g, dtype=torch.float64) * 2
    y = torch.randint(0, C, (B, ), generator=g)
    got = sdd_loss(local_s, local_t, y, base=base, complementary_weight=3.0)
    want = []
    for b in range(B):
        cells_t = local_t[b].t().tolist()
        cells_s = local_s[b].t().tolist()
        ok = [max(range(C), key=lambda c: row[c]) == int(y[b]) for row in cells_t]
        total = 0.0
        for r in range(5):
            if base == 'kd':
                value = ref_kd(cells_s[r], cells_t[r], 4.0)
            else:
                value = ref_dkd(cells_s[r], cells_t[r], int(y[b]), 1.0, 8.0, 4.0)
            total += (1.0 if ok[r] == ok[0] else 3.0) * value
        want.append(total / 5)
    torch.testing.assert_close(got, torch.tensor(want, dtype=torch.float64))


@pytest.mark.parametrize('base', ['kd', 'dkd'])
def test_single_scale_is_the_base_loss_on_global_logits(base):
    feat_s, feat_t, cls_s, cls_t, y = models(seed=3)
    got = build('SDDLoss', base=base, scales=(1, ))(feat_s, feat_t, y, cls_s, cls_t)
    glob_s, glob_t = cls_s(feat_s.mean(dim=(2, 3))), cls_t(feat_t.mean(dim=(2, 3)))
    want = build('DKDLoss' if base == 'dkd' else 'KDLoss')(glob_s, glob_t, y)
    torch.testing.assert_close(got, want)


def test_loss_on_views_weights_every_view_equally():
    """Precomputed (N, C, V) view logits (SDD on RoIs): the base loss averaged over the
    views with equal weights, no consistent / complementary weighting (the spec)."""
    feat_s, feat_t, cls_s, cls_t, y = models(seed=5)
    y[0] = 255  # ignored sample
    loss = build('SDDLoss', beta=2.0, temperature=2.0, loss_weight=0.5)
    views_s = sdd_local_logits(feat_s, cls_s, loss.scales, loss.pool_base)
    views_t = sdd_local_logits(feat_t, cls_t, loss.scales, loss.pool_base).detach()
    assert views_s.shape == (y.shape[0], cls_s.out_features, 21)
    got = loss.loss_on_views(views_s, views_t, y)
    # by hand: DKD per view (alpha 1, beta 2, T 2), mean over views, mean over valid rows
    valid = y != 255
    per_view = dkd_loss(views_s[valid], views_t[valid],
                        y[valid, None].expand(-1, views_s.shape[2]), 1.0, 2.0, 2.0)
    torch.testing.assert_close(got, 0.5 * per_view.mean(dim=1).mean())
    # = the multi-scale loss with complementary_weight=1 on the same cells
    equal = build('SDDLoss', beta=2.0, temperature=2.0, loss_weight=0.5, complementary_weight=1.0)
    torch.testing.assert_close(got, equal(feat_s, feat_t, y, cls_s, cls_t))
    per = loss.loss_on_views(views_s, views_t, y, reduction_override='none')
    assert per[0] == 0 and per.shape == y.shape
    with pytest.raises(ValueError, match='shape'):
        loss.loss_on_views(views_s, views_t[:, :-1], y)


def test_gradients_reach_the_student_only():
    feat_s, feat_t, cls_s, cls_t, y = models(seed=4)
    feat_t.requires_grad_()
    value = build('SDDLoss')(feat_s, feat_t, y, cls_s, cls_t)
    value.backward()
    assert feat_s.grad is not None and feat_s.grad.abs().sum() > 0
    assert cls_s.weight.grad is not None
    assert feat_t.grad is None and cls_t.weight.grad is None


def test_reductions_ignore_and_weights():
    feat_s, feat_t, cls_s, cls_t, y = models(seed=5)
    loss = build('SDDLoss')
    per = loss(feat_s, feat_t, y, cls_s, cls_t, reduction_override='none')
    assert per.shape == (B, )
    torch.testing.assert_close(loss(feat_s, feat_t, y, cls_s, cls_t), per.mean())
    y2 = y.clone()
    y2[1] = 255
    torch.testing.assert_close(
        loss(feat_s, feat_t, y2, cls_s, cls_t), (per[0] + per[2]) / 2)
    w = torch.tensor([2.0, 0.0, 1.0], dtype=torch.float64)
    torch.testing.assert_close(
        loss(feat_s, feat_t, y, cls_s, cls_t, weight=w), (2 * per[0] + per[2]) / 2)


def test_logit_stand_applies_to_local_logits():
    feat_s, feat_t, cls_s, cls_t, y = models(seed=6)
    got = build('SDDLoss', logit_stand=True)(feat_s, feat_t, y, cls_s, cls_t)

    def z(x):
        return (x - x.mean(1, keepdim=True)) / (x.std(1, keepdim=True) + 1e-7)

    local_s, local_t = sdd_local_logits(feat_s, cls_s), sdd_local_logits(feat_t, cls_t)
    torch.testing.assert_close(got, sdd_loss(z(local_s), z(local_t), y).mean())


def test_clear_errors():
    feat_s, feat_t, cls_s, cls_t, y = models()
    with pytest.raises(ValueError, match='target'):
        build('SDDLoss')(feat_s, feat_t, None, cls_s, cls_t)
    with pytest.raises(ValueError, match='scales'):
        build('SDDLoss', scales=(2, 4))
    with pytest.raises(ValueError, match='base'):
        build('SDDLoss', base='dist')
    with pytest.raises(ValueError, match='shape'):
        build('SDDLoss')(feat_s, feat_t, y, cls_s, nn.Linear(8, C + 1).double())


def test_gradient_matches_finite_differences():
    feat_s, feat_t, cls_s, cls_t, y = models(seed=7, hw_s=4)
    loss = build('SDDLoss')
    assert torch.autograd.gradcheck(lambda f: loss(f, feat_t, y, cls_s, cls_t), (feat_s, ))


@pytest.mark.parametrize('base', ['kd', 'dkd'])
def test_one_by_one_map_warns_and_is_the_base_loss(base):
    """A 1 x 1 final map (a narrow ImageNet ResNet at 32 px) has no local structure: every
    cell repeats the global one, all are consistent, SDD equals its base loss, and says so."""
    feat_s, feat_t, cls_s, cls_t, y = models(seed=5, hw_s=1, hw_t=1)
    with pytest.warns(UserWarning, match=r'feature map is 1 x 1.*reduces to its base loss'):
        got = build('SDDLoss', base=base)(feat_s, feat_t, y, cls_s, cls_t)
    want = build('DKDLoss' if base == 'dkd' else 'KDLoss')(cls_s(feat_s[..., 0, 0]),
                                                           cls_t(feat_t[..., 0, 0]), y)
    torch.testing.assert_close(got, want)
