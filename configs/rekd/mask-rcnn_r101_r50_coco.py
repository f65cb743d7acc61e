# ReKD (Xu et al., TCSVT 2023: TISD + NTID) on the RoI class logits, Mask R-CNN R101-FPN ->
# R50-FPN, COCO 1x (the pair: ../_base_/det/mask-rcnn_r101_r50_coco.py). No official COCO
# setting is published: k=5, alpha=1, beta=1, gamma=0 (the loss defaults) with T=1 as every
# COCO logit recipe here (ours).
# Train: python tools/train.py configs/rekd/mask-rcnn_r101_r50_coco.py
_base_ = ['../_base_/det/mask-rcnn_r101_r50_coco.py']
model = dict(distill_losses=dict(
    rekd=dict(type='ReKDLoss', k=5, alpha=1.0, beta=1.0, gamma=0.0, temperature=1.0,
              loss_weight=1.0)))
