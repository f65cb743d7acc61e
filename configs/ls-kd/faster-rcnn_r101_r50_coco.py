# KD with logit standardisation (Sun et al., CVPR 2024) on the RoI class logits, Faster R-CNN
# R101-FPN -> R50-FPN, COCO 1x (the pair: ../_base_/det/faster-rcnn_r101_r50_coco.py).
# The paper's recipe T=2, loss weight 9 (its classification setting; no COCO one).
# Train: python tools/train.py configs/ls-kd/faster-rcnn_r101_r50_coco.py
_base_ = ['../_base_/det/faster-rcnn_r101_r50_coco.py']
model = dict(distill_losses=dict(
    kd=dict(type='KDLoss', logit_stand=True, temperature=2.0, loss_weight=9.0)))
