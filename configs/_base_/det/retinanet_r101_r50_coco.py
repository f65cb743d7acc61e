# RetinaNet R101-FPN (teacher, mmdet model zoo retinanet_r101_fpn_1x_coco, 38.5 box AP)
# -> RetinaNet R50-FPN (student) on COCO, 1x schedule: the student's own mmdet config
# (retinanet_r50_fpn_1x_coco.py) with its model wrapped in mmkd's DenseHeadDistiller.
# Method configs add `distill_losses` (sigmoid-capable losses only: use_sigmoid=True).
_base_ = ['mmdet::retinanet/retinanet_r50_fpn_1x_coco.py']
custom_imports = dict(imports=['mmkd'], allow_failed_imports=False)

model = dict(
    _delete_=True,
    type='mmkd.DenseHeadDistiller',
    student=_base_.model,
    teacher='mmdet::retinanet/retinanet_r101_fpn_1x_coco.py',
    teacher_ckpt='https://download.openmmlab.com/mmdetection/v2.0/retinanet/'
    'retinanet_r101_fpn_1x_coco/retinanet_r101_fpn_1x_coco_20200130-7a93545f.pth')
