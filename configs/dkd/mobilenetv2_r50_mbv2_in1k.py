# DKD (Zhao et al., CVPR 2022), ResNet-50 -> MobileNetV2, ImageNet-1k.
# alpha=1, beta=2, T=1 and a linear warm-up of 1 epoch: mdistiller imagenet/r50_mv2/dkd.yaml.
_base_ = ['../_base_/cls/mobilenetv2_r50_mbv2_in1k.py']
model = dict(distill_losses=dict(
    dkd=dict(type='DKDLoss', alpha=1.0, beta=2.0, temperature=1.0, loss_weight=1.0)))
custom_hooks = [dict(type='mmkd.DistillLossScheduleHook', warmup=1, by_epoch=True)]
