# RLD (Sun et al., 2024) on the RoI class logits, RoI labels as targets, Faster R-CNN R101-FPN ->
# R50-FPN, COCO 1x (the pair: ../_base_/det/faster-rcnn_r101_r50_coco.py). No official COCO
# setting is published: alpha=1, T=Ta=1 (ImageNet) and beta=0.25 as DKD's COCO NCKD weight
# (ours).
# Train: python tools/train.py configs/rld/faster-rcnn_r101_r50_coco.py
_base_ = ['../_base_/det/faster-rcnn_r101_r50_coco.py']
model = dict(distill_losses=dict(
    rld=dict(type='RLDLoss', alpha=1.0, beta=0.25, temperature=1.0, loss_weight=1.0)))
