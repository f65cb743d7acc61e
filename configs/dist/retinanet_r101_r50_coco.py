# DIST (Huang et al., NeurIPS 2022) with sigmoid probabilities (use_sigmoid=True), per anchor
# and location of every FPN level, RetinaNet R101-FPN -> R50-FPN, COCO 1x (the pair:
# ../_base_/det/retinanet_r101_r50_coco.py). tau=1, beta=1, gamma=1 (the official detection
# setting).
# Train: python tools/train.py configs/dist/retinanet_r101_r50_coco.py
_base_ = ['../_base_/det/retinanet_r101_r50_coco.py']
model = dict(distill_losses=dict(
    dist=dict(type='DISTLoss', use_sigmoid=True, tau=1.0, beta=1.0, gamma=1.0,
              loss_weight=1.0)))
