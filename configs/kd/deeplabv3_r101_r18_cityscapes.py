# KD (Hinton et al., 2015) on the decode-head logits, per pixel (ignored pixels excluded).
# T=1, weight 1: the KD baseline of the CIRKD / DIST segmentation code
# (--kd-temperature 1.0, --lambda-kd 1.0).
_base_ = ['../_base_/seg/deeplabv3_r101_r18_cityscapes.py']
model = dict(distill_losses=dict(kd=dict(type='KDLoss', temperature=1.0, loss_weight=1.0)))
