# DKD (Zhao et al., CVPR 2022), ResNet-34 -> ResNet-18, ImageNet-1k.
# alpha=1, beta=0.5, T=1 and a linear warm-up of 1 epoch: mdistiller imagenet/r34_r18/dkd.yaml.
_base_ = ['../_base_/cls/resnet_r34_r18_in1k.py']
model = dict(distill_losses=dict(
    dkd=dict(type='DKDLoss', alpha=1.0, beta=0.5, temperature=1.0, loss_weight=1.0)))
custom_hooks = [dict(type='mmkd.DistillLossScheduleHook', warmup=1, by_epoch=True)]
