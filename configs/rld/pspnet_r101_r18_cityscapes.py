# RLD (Sun et al., 2024) per pixel, the pixel labels as targets. No Cityscapes recipe is
# published: T=1, alpha=1, beta=0.5 (the ImageNet setting) is our choice.
_base_ = ['../_base_/seg/pspnet_r101_r18_cityscapes.py']
model = dict(
    distill_losses=dict(rld=dict(type='RLDLoss', alpha=1.0, beta=0.5, temperature=1.0)))
