# RLD (Sun et al., 2024, refined logit distillation), ResNet-34 -> ResNet-18, ImageNet-1k.
# alpha=1, beta=0.5, T=Ta=1 and a linear warm-up of 1 epoch (the official ImageNet setting).
_base_ = ['../_base_/cls/resnet_r34_r18_in1k.py']
model = dict(distill_losses=dict(
    rld=dict(type='RLDLoss', alpha=1.0, beta=0.5, temperature=1.0, alpha_temperature=1.0,
             loss_weight=1.0)))
custom_hooks = [dict(type='mmkd.DistillLossScheduleHook', warmup=1, by_epoch=True)]
