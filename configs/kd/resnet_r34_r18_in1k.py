# KD (Hinton et al., 2015) on the head logits, ResNet-34 -> ResNet-18, ImageNet-1k.
# T=1, weight 5: MMRazor's KD recipe for this pair (kd_logits_resnet34_resnet18_8xb32_in1k).
_base_ = ['../_base_/cls/resnet_r34_r18_in1k.py']
model = dict(distill_losses=dict(kd=dict(type='KDLoss', temperature=1.0, loss_weight=5.0)))
