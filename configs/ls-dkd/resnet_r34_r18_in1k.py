# DKD with logit standardisation (Sun et al., CVPR 2024), ResNet-34 -> ResNet-18, ImageNet-1k.
# Z-scored logits, T=2, weight 9 on DKD's ImageNet alpha=1, beta=0.5, with DKD's 1-epoch warm-up.
_base_ = ['../_base_/cls/resnet_r34_r18_in1k.py']
model = dict(distill_losses=dict(
    dkd=dict(type='DKDLoss', alpha=1.0, beta=0.5, temperature=2.0, logit_stand=True,
             loss_weight=9.0)))
custom_hooks = [dict(type='mmkd.DistillLossScheduleHook', warmup=1, by_epoch=True)]
