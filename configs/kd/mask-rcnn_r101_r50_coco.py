# KD (Hinton et al., 2015) on the RoI class logits (C+1 classes, background included),
# Mask R-CNN R101-FPN -> R50-FPN, COCO 1x (the pair: ../_base_/det/mask-rcnn_r101_r50_coco.py).
# T=1 as in the official DKD detection recipe (no official COCO KD setting; ours).
# Train: python tools/train.py configs/kd/mask-rcnn_r101_r50_coco.py
_base_ = ['../_base_/det/mask-rcnn_r101_r50_coco.py']
model = dict(distill_losses=dict(kd=dict(type='KDLoss', temperature=1.0, loss_weight=1.0)))
