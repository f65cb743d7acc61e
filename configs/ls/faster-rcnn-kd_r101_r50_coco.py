# KD + logit standardisation: Faster R-CNN R101-FPN -> R50-FPN, COCO 1x.
# Student: faster-rcnn_r50_fpn_1x_coco.py; teacher: faster-rcnn_r101_fpn_1x_coco.py
# (mmdet model zoo). Train: python tools/train.py configs/ls/faster-rcnn-kd_r101_r50_coco.py
_base_ = ['mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py']
custom_imports = dict(imports=['mmkd'], allow_failed_imports=False)

# KD with logit standardisation (Sun et al., CVPR 2024) on the RoI class logits:
# the paper's recipe T=2, loss weight 9 (its classification setting; no COCO one).
model = dict(
    _delete_=True,
    type='mmkd.TwoStageDistiller',
    student=_base_.model,
    teacher='mmdet::faster_rcnn/faster-rcnn_r101_fpn_1x_coco.py',
    teacher_ckpt='https://download.openmmlab.com/mmdetection/v2.0/faster_rcnn/faster_rcnn_r101_fpn_1x_coco/faster_rcnn_r101_fpn_1x_coco_20200130-f513f705.pth',  # noqa: E501
    distill_losses=dict(
        kd=dict(type='KDLoss', logit_stand=True, temperature=2.0, loss_weight=9.0)))
