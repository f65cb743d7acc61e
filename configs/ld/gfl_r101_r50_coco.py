# LD (Zheng et al., CVPR 2022): localisation distillation of the box-side distributions (GFL's
# 4 x 17 integral logits) on the main positive locations, as mmdet's LDHead, GFL R101-FPN ->
# GFL R50-FPN, COCO 1x (the pair: ../_base_/det/gfl_r101_r50_coco.py). T=10, weight 0.25:
# mmdet's configs/ld/ld_r50-gflv1-r101_fpn_1x_coco.py (reported there: 40.1 -> 41.0 box AP).
# Train: python tools/train.py configs/ld/gfl_r101_r50_coco.py
_base_ = ['../_base_/det/gfl_r101_r50_coco.py']
model = dict(distill_losses=dict(ld=dict(type='LDLoss', temperature=10.0, loss_weight=0.25)))
