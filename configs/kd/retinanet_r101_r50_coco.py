# KD with sigmoid (Bernoulli) class probabilities, per anchor and location of every FPN level,
# RetinaNet R101-FPN -> R50-FPN, COCO 1x (the pair: ../_base_/det/retinanet_r101_r50_coco.py).
# T=1 (ours: no official setting).
# Train: python tools/train.py configs/kd/retinanet_r101_r50_coco.py
_base_ = ['../_base_/det/retinanet_r101_r50_coco.py']
model = dict(distill_losses=dict(
    kd=dict(type='KDLoss', use_sigmoid=True, temperature=1.0, loss_weight=1.0)))
