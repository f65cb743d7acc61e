# Mask R-CNN R101-FPN (teacher, mmdet model zoo mask-rcnn_r101_fpn_1x_coco, 40.0 box AP,
# 36.1 mask AP) -> Mask R-CNN R50-FPN (student) on COCO, 1x schedule: the student's own mmdet
# config (mask-rcnn_r50_fpn_1x_coco.py) with its model wrapped in mmkd's TwoStageDistiller.
# Method configs add `distill_losses` (on the RoI class logits). Mask-logit distillation is
# off; enable it with, e.g.,
# mask_distill_losses=dict(mask_kd=dict(type='KDLoss', use_sigmoid=True, temperature=1.0)).
_base_ = ['mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py']
custom_imports = dict(imports=['mmkd'], allow_failed_imports=False)

model = dict(
    _delete_=True,
    type='mmkd.TwoStageDistiller',
    student=_base_.model,
    teacher='mmdet::mask_rcnn/mask-rcnn_r101_fpn_1x_coco.py',
    teacher_ckpt='https://download.openmmlab.com/mmdetection/v2.0/mask_rcnn/'
    'mask_rcnn_r101_fpn_1x_coco/mask_rcnn_r101_fpn_1x_coco_20200204-1efe0ed5.pth')
