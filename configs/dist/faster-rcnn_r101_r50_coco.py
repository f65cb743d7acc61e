# DIST (Huang et al., NeurIPS 2022) on the RoI class logits, Faster R-CNN R101-FPN -> R50-FPN,
# COCO 1x (the pair: ../_base_/det/faster-rcnn_r101_r50_coco.py).
# tau=1, beta=1, gamma=1 (the official detection setting).
# Train: python tools/train.py configs/dist/faster-rcnn_r101_r50_coco.py
_base_ = ['../_base_/det/faster-rcnn_r101_r50_coco.py']
model = dict(distill_losses=dict(
    dist=dict(type='DISTLoss', tau=1.0, beta=1.0, gamma=1.0, loss_weight=1.0)))
