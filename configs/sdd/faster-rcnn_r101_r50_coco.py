# SDD: Faster R-CNN R101-FPN -> R50-FPN, COCO 1x.
# Student: faster-rcnn_r50_fpn_1x_coco.py; teacher: faster-rcnn_r101_fpn_1x_coco.py
# (mmdet model zoo). Train: python tools/train.py configs/sdd/faster-rcnn_r101_r50_coco.py
_base_ = ['mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py']
custom_imports = dict(imports=['mmkd'], allow_failed_imports=False)

# SDD (Wei et al., CVPR 2024) on RoI features: five views of every sampled RoI
# (2x2 average pooling + four stride-2 subsamples of a 14x14 RoIAlign) through
# each model's box head; base DKD with its COCO setting (alpha=1, beta=0.25,
# T=1), complementary views weighted 2 (ours: SDD reports no COCO results).
model = dict(
    _delete_=True,
    type='mmkd.TwoStageDistiller',
    student=_base_.model,
    teacher='mmdet::faster_rcnn/faster-rcnn_r101_fpn_1x_coco.py',
    teacher_ckpt='https://download.openmmlab.com/mmdetection/v2.0/faster_rcnn/faster_rcnn_r101_fpn_1x_coco/faster_rcnn_r101_fpn_1x_coco_20200130-f513f705.pth',  # noqa: E501
    distill_losses=dict(
        sdd=dict(type='SDDLoss', base='dkd', alpha=1.0, beta=0.25, temperature=1.0,
                 complementary_weight=2.0, loss_weight=1.0)))
