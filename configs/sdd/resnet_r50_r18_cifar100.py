# SD-DKD (Wei et al., CVPR 2024), ResNet-50 -> ResNet-18 (mmpretrain CIFAR ResNets), CIFAR-100.
# DKD alpha=1, beta=8, T=4 with a 20-epoch linear warm-up (the CIFAR-100 DKD recipe that the
# official SDD code builds on), scales 1+2x2+4x4, complementary regions x2.
_base_ = ['../_base_/cls/resnet_r50_r18_cifar100.py']
model = dict(distill_losses=dict(
    sdd=dict(type='SDDLoss', base='dkd', scales=(1, 2, 4), complementary_weight=2.0, alpha=1.0,
             beta=8.0, temperature=4.0, loss_weight=1.0)))
custom_hooks = [dict(type='mmkd.DistillLossScheduleHook', warmup=20, by_epoch=True)]
