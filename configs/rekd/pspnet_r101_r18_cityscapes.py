# ReKD (Xu et al., TCSVT 2023) per pixel. No official code or Cityscapes recipe: the
# loss defaults (k=5, alpha=beta=1, gamma=0, teacher top-k) with T=1, as the segmentation
# KD baseline, are our choice.
_base_ = ['../_base_/seg/pspnet_r101_r18_cityscapes.py']
model = dict(
    distill_losses=dict(
        rekd=dict(type='ReKDLoss', k=5, alpha=1.0, beta=1.0, gamma=0.0, temperature=1.0)))
