# KD from mmdet's COCO model-zoo Faster R-CNN R101 (80 classes) into a Faster R-CNN R50 on OUR
# 3 classes, which are COCO categories: the teacher's logits are restricted by name to our
# classes (plus background) before the losses (student_classes; the teacher's 80 names come
# from its checkpoint's meta, or else from its config's CocoDataset). Inherits mmkd's config
# by package:
#   python $MMKD_TOOLS/train.py configs/kd_faster-rcnn_coco80_r50_ours3.py
_base_ = ['mmkd::kd/faster-rcnn_r101_r50_coco.py']
custom_imports = dict(imports=['mmkd'], allow_failed_imports=False)

# Our dataset's classes (COCO format, a subset of COCO's names).
classes = ('person', 'bicycle', 'car')
model = dict(
    student=dict(roi_head=dict(bbox_head=dict(num_classes=len(classes)))),
    student_classes=classes)  # the teacher (80 classes) keeps its model-zoo checkpoint

# ----------------------------------------------------------------- data: ours, COCO format
data_root = '{{$OURS_ROOT:data/ours/}}'
train_dataloader = dict(dataset=dict(
    data_root=data_root, metainfo=dict(classes=classes),
    ann_file='annotations/train.json', data_prefix=dict(img='train/')))
val_dataloader = dict(dataset=dict(
    data_root=data_root, metainfo=dict(classes=classes),
    ann_file='annotations/val.json', data_prefix=dict(img='val/')))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/val.json')
test_evaluator = val_evaluator
