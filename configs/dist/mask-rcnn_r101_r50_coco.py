# DIST: Mask R-CNN R101-FPN -> R50-FPN, COCO 1x.
# Student: mask-rcnn_r50_fpn_1x_coco.py; teacher: mask-rcnn_r101_fpn_1x_coco.py
# (mmdet model zoo). Train: python tools/train.py configs/dist/mask-rcnn_r101_r50_coco.py
_base_ = ['mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py']
custom_imports = dict(imports=['mmkd'], allow_failed_imports=False)

# DIST (Huang et al., NeurIPS 2022) on the RoI class logits: tau=1, beta=1, gamma=1
# (the official detection setting).
# Mask-logit distillation is off; enable it with, e.g.,
# mask_distill_losses=dict(mask_kd=dict(type='KDLoss', use_sigmoid=True, temperature=1.0)).
model = dict(
    _delete_=True,
    type='mmkd.TwoStageDistiller',
    student=_base_.model,
    teacher='mmdet::mask_rcnn/mask-rcnn_r101_fpn_1x_coco.py',
    teacher_ckpt='https://download.openmmlab.com/mmdetection/v2.0/mask_rcnn/mask_rcnn_r101_fpn_1x_coco/mask_rcnn_r101_fpn_1x_coco_20200204-1efe0ed5.pth',  # noqa: E501
    distill_losses=dict(
        dist=dict(type='DISTLoss', tau=1.0, beta=1.0, gamma=1.0, loss_weight=1.0)))
