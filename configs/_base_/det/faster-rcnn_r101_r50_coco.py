# Faster R-CNN R101-FPN (teacher, mmdet model zoo faster-rcnn_r101_fpn_1x_coco, 39.4 box AP)
# -> Faster R-CNN R50-FPN (student) on COCO, 1x schedule: the student's own mmdet config
# (faster-rcnn_r50_fpn_1x_coco.py) with its model wrapped in mmkd's TwoStageDistiller.
# Method configs add `distill_losses` (on the RoI class logits).
_base_ = ['mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py']
custom_imports = dict(imports=['mmkd'], allow_failed_imports=False)

model = dict(
    _delete_=True,
    type='mmkd.TwoStageDistiller',
    student=_base_.model,
    teacher='mmdet::faster_rcnn/faster-rcnn_r101_fpn_1x_coco.py',
    teacher_ckpt='https://download.openmmlab.com/mmdetection/v2.0/faster_rcnn/'
    'faster_rcnn_r101_fpn_1x_coco/faster_rcnn_r101_fpn_1x_coco_20200130-f513f705.pth')
