# DIST (Huang et al., NeurIPS 2022) on the decode-head logits; the intra-class term runs
# over all valid pixels of the batch. tau=1, beta=gamma=1, weight 1, and DIST on the
# auxiliary head with weight 0.4: the official segmentation recipe (DIST_KD train_kd.py).
_base_ = ['../_base_/seg/pspnet_r101_r18_cityscapes.py']
model = dict(
    distill_losses=dict(dist=dict(type='DISTLoss', beta=1.0, gamma=1.0, tau=1.0, loss_weight=1.0)),
    aux_distill_weight=0.4)
