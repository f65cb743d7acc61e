# DKD (Zhao et al., CVPR 2022) on the RoI class logits, RoI labels as targets (background is
# an ordinary class), Faster R-CNN R101-FPN -> R50-FPN, COCO 1x (the pair:
# ../_base_/det/faster-rcnn_r101_r50_coco.py). alpha=1, beta=0.25, T=1, the official COCO
# setting (mdistiller/detection, no warm-up).
# Train: python tools/train.py configs/dkd/faster-rcnn_r101_r50_coco.py
_base_ = ['../_base_/det/faster-rcnn_r101_r50_coco.py']
model = dict(distill_losses=dict(
    dkd=dict(type='DKDLoss', alpha=1.0, beta=0.25, temperature=1.0, loss_weight=1.0)))
