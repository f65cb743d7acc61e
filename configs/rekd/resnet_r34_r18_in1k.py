# ReKD (Xu et al., IEEE TCSVT 2023: TISD + NTID), ResNet-34 -> ResNet-18, ImageNet-1k.
# No official code or recipe is published: the spec's defaults (k=5 teacher top-k classes,
# alpha=beta=1, gamma=0, T=4) with the DKD-style linear warm-up of 1 ImageNet epoch.
_base_ = ['../_base_/cls/resnet_r34_r18_in1k.py']
model = dict(distill_losses=dict(
    rekd=dict(type='ReKDLoss', k=5, alpha=1.0, beta=1.0, gamma=0.0, temperature=4.0,
              topk_source='teacher', loss_weight=1.0)))
custom_hooks = [dict(type='mmkd.DistillLossScheduleHook', warmup=1, by_epoch=True)]
