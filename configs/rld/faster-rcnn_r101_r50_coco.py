# RLD: Faster R-CNN R101-FPN -> R50-FPN, COCO 1x.
# Student: faster-rcnn_r50_fpn_1x_coco.py; teacher: faster-rcnn_r101_fpn_1x_coco.py
# (mmdet model zoo). Train: python tools/train.py configs/rld/faster-rcnn_r101_r50_coco.py
_base_ = ['mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py']
custom_imports = dict(imports=['mmkd'], allow_failed_imports=False)

# RLD (Sun et al., 2024) on the RoI class logits, RoI labels as targets. No
# official COCO setting is published: alpha=1, T=Ta=1 (ImageNet) and
# beta=0.25 as DKD's COCO NCKD weight (ours).
model = dict(
    _delete_=True,
    type='mmkd.TwoStageDistiller',
    student=_base_.model,
    teacher='mmdet::faster_rcnn/faster-rcnn_r101_fpn_1x_coco.py',
    teacher_ckpt='https://download.openmmlab.com/mmdetection/v2.0/faster_rcnn/faster_rcnn_r101_fpn_1x_coco/faster_rcnn_r101_fpn_1x_coco_20200130-f513f705.pth',  # noqa: E501
    distill_losses=dict(
        rld=dict(type='RLDLoss', alpha=1.0, beta=0.25, temperature=1.0, loss_weight=1.0)))
