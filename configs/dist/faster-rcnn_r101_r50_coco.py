# DIST: Faster R-CNN R101-FPN -> R50-FPN, COCO 1x.
# Student: faster-rcnn_r50_fpn_1x_coco.py; teacher: faster-rcnn_r101_fpn_1x_coco.py
# (mmdet model zoo). Train: python tools/train.py configs/dist/faster-rcnn_r101_r50_coco.py
_base_ = ['mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py']
custom_imports = dict(imports=['mmkd'], allow_failed_imports=False)

# DIST (Huang et al., NeurIPS 2022) on the RoI class logits: tau=1, beta=1, gamma=1
# (the official detection setting).
model = dict(
    _delete_=True,
    type='mmkd.TwoStageDistiller',
    student=_base_.model,
    teacher='mmdet::faster_rcnn/faster-rcnn_r101_fpn_1x_coco.py',
    teacher_ckpt='https://download.openmmlab.com/mmdetection/v2.0/faster_rcnn/faster_rcnn_r101_fpn_1x_coco/faster_rcnn_r101_fpn_1x_coco_20200130-f513f705.pth',  # noqa: E501
    distill_losses=dict(
        dist=dict(type='DISTLoss', tau=1.0, beta=1.0, gamma=1.0, loss_weight=1.0)))
