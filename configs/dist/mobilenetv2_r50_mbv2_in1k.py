# DIST (Huang et al., NeurIPS 2022), ResNet-50 -> MobileNetV2, ImageNet-1k.
# beta=gamma=tau=1 and the whole loss weighted by 2: the official ImageNet recipe.
_base_ = ['../_base_/cls/mobilenetv2_r50_mbv2_in1k.py']
model = dict(distill_losses=dict(
    dist=dict(type='DISTLoss', beta=1.0, gamma=1.0, tau=1.0, loss_weight=2.0)))
