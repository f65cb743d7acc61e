# DIST (Huang et al., NeurIPS 2022), ResNet-34 -> ResNet-18, ImageNet-1k.
# beta=gamma=tau=1 and the whole loss weighted by 2: the official ImageNet recipe.
_base_ = ['../_base_/cls/resnet_r34_r18_in1k.py']
model = dict(distill_losses=dict(
    dist=dict(type='DISTLoss', beta=1.0, gamma=1.0, tau=1.0, loss_weight=2.0)))
