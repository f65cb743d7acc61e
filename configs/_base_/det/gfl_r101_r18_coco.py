# GFL R101-FPN (teacher, mmdet model zoo gfl_r101_fpn_ms-2x_coco, 44.7 box AP) -> GFL
# R18-FPN (student: mmdet's gfl_r50_fpn_1x_coco with a ResNet-18 backbone) on COCO, 1x
# schedule, wrapped in mmkd's DenseHeadDistiller: the pair of mmdet's
# configs/ld/ld_r18-gflv1-r101_fpn_1x_coco.py (same teacher and checkpoint, same student,
# ATSS assignment, SGD lr 0.01, 12 epochs).
_base_ = ['mmdet::gfl/gfl_r50_fpn_1x_coco.py']
custom_imports = dict(imports=['mmkd'], allow_failed_imports=False)

student = _base_.model
student.backbone.update(
    depth=18, init_cfg=dict(type='Pretrained', checkpoint='torchvision://resnet18'))
student.neck.in_channels = [64, 128, 256, 512]
model = dict(
    _delete_=True,
    type='mmkd.DenseHeadDistiller',
    student=student,
    teacher='mmdet::gfl/gfl_r101_fpn_ms-2x_coco.py',
    teacher_ckpt='https://download.openmmlab.com/mmdetection/v2.0/gfl/gfl_r101_fpn_mstrain_2x_coco/'
    'gfl_r101_fpn_mstrain_2x_coco_20200629_200126-dd12f847.pth')
