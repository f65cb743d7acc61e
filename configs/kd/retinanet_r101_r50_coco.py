# KD: RetinaNet R101-FPN -> R50-FPN, COCO 1x.
# Student: retinanet_r50_fpn_1x_coco.py; teacher: retinanet_r101_fpn_1x_coco.py
# (mmdet model zoo). Train: python tools/train.py configs/kd/retinanet_r101_r50_coco.py
_base_ = ['mmdet::retinanet/retinanet_r50_fpn_1x_coco.py']
custom_imports = dict(imports=['mmkd'], allow_failed_imports=False)

# KD with sigmoid (Bernoulli) class probabilities, per anchor and location of every
# FPN level, T=1 (ours: no official setting).
model = dict(
    _delete_=True,
    type='mmkd.DenseHeadDistiller',
    student=_base_.model,
    teacher='mmdet::retinanet/retinanet_r101_fpn_1x_coco.py',
    teacher_ckpt='https://download.openmmlab.com/mmdetection/v2.0/retinanet/retinanet_r101_fpn_1x_coco/retinanet_r101_fpn_1x_coco_20200130-7a93545f.pth',  # noqa: E501
    distill_losses=dict(
        kd=dict(type='KDLoss', use_sigmoid=True, temperature=1.0, loss_weight=1.0)))
