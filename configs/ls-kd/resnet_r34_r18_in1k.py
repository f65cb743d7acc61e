# KD with logit standardisation (Sun et al., CVPR 2024), ResNet-34 -> ResNet-18, ImageNet-1k.
# Z-scored logits, T=2, weight 9: the spec's (and the official README's) recipe.
_base_ = ['../_base_/cls/resnet_r34_r18_in1k.py']
model = dict(distill_losses=dict(
    kd=dict(type='KDLoss', temperature=2.0, logit_stand=True, loss_weight=9.0)))
