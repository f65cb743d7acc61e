# DIST (Huang et al., NeurIPS 2022) with sigmoid probabilities (use_sigmoid=True), per location
# of every level (strides 8, 16, 32), RTMDet-l -> RTMDet-s, COCO 300 epochs (the pair, its
# EMA / pipeline-switch / stop hooks: ../_base_/det/rtmdet_l_s_coco.py). tau=1, beta=1,
# gamma=1 (the official detection setting).
# Train: python tools/train.py configs/dist/rtmdet_l_s_coco.py
_base_ = ['../_base_/det/rtmdet_l_s_coco.py']
model = dict(distill_losses=dict(
    dist=dict(type='DISTLoss', use_sigmoid=True, tau=1.0, beta=1.0, gamma=1.0,
              loss_weight=1.0)))
