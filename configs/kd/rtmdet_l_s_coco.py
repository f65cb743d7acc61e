# KD with sigmoid (Bernoulli) class probabilities, per location of every level (strides 8, 16,
# 32), RTMDet-l -> RTMDet-s, COCO 300 epochs (the pair, its EMA / pipeline-switch / stop
# hooks: ../_base_/det/rtmdet_l_s_coco.py). T=1, weight 1 (ours: no official setting).
# Train: python tools/train.py configs/kd/rtmdet_l_s_coco.py
_base_ = ['../_base_/det/rtmdet_l_s_coco.py']
model = dict(distill_losses=dict(
    kd=dict(type='KDLoss', use_sigmoid=True, temperature=1.0, loss_weight=1.0)))
