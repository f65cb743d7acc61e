# SDD (Wei et al., CVPR 2024) on RoI features, Faster R-CNN R101-FPN -> R50-FPN, COCO 1x (the
# pair: ../_base_/det/faster-rcnn_r101_r50_coco.py): five views of every sampled RoI (2x2
# average pooling + four stride-2 subsamples of a 14x14 RoIAlign) through each model's box
# head; base DKD with its COCO setting (alpha=1, beta=0.25, T=1), averaged over the five views
# with equal weights as in the official detection code (the consistent / complementary
# weighting of classification SDD does not apply to RoI views; SDD reports no COCO results).
# Train: python tools/train.py configs/sdd/faster-rcnn_r101_r50_coco.py
_base_ = ['../_base_/det/faster-rcnn_r101_r50_coco.py']
model = dict(distill_losses=dict(
    sdd=dict(type='SDDLoss', base='dkd', alpha=1.0, beta=0.25, temperature=1.0,
             loss_weight=1.0)))
