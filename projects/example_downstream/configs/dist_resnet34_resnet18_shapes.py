# DIST, ResNet-34 -> ResNet-18, on our 6-class data. Inherits mmkd's config BY PATH, from an
# mmkd checkout at $MMKD_ROOT (default: ../../.., the checkout this folder sits in):
#   export MMKD_ROOT=/path/to/mmkd
#   python $MMKD_TOOLS/train.py configs/dist_resnet34_resnet18_shapes.py
# Any train script works for this one, e.g. mmpretrain's tools/train.py: custom_imports
# imports mmkd before the model is built.
_base_ = ['{{$MMKD_ROOT:../../..}}/configs/dist/resnet_r34_r18_in1k.py']
custom_imports = dict(imports=['mmkd'], allow_failed_imports=False)

model = dict(
    student=dict(head=dict(num_classes=6, topk=(1, ))),
    teacher='{{ fileDirname }}/resnet34_shapes.py',
    teacher_ckpt='{{$TEACHER_CKPT:work_dirs/resnet34_shapes/epoch_20.pth}}',
    # mmkd's DIST recipe weights the loss by 2 (beta = gamma = 1); here the intra-class term
    # is weighted more (few classes, each seen often in a batch)
    distill_losses=dict(dist=dict(beta=1.0, gamma=2.0, loss_weight=1.0)))

# ----------------------------------------------------------------- data (as the teacher's)
data_root = '{{$SHAPES_ROOT:data/shapes/cls}}'
# The sub-folder names, in the order CustomDataset numbers them (sorted).
classes = ('circle', 'cross', 'hexagon', 'square', 'star', 'triangle')
data_preprocessor = dict(num_classes=len(classes))
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=32, crop_ratio_range=(0.6, 1.0)),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(32, 32)),
    dict(type='PackInputs')
]
train_dataloader = dict(
    batch_size=16, num_workers=2,
    dataset=dict(_delete_=True, type='CustomDataset', data_root=data_root, data_prefix='train',
                 metainfo=dict(classes=classes), pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=16, num_workers=2,
    dataset=dict(_delete_=True, type='CustomDataset', data_root=data_root, data_prefix='val',
                 metainfo=dict(classes=classes), pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(topk=(1, ))
test_evaluator = val_evaluator

# ----------------------------------------------------------------- schedule
optim_wrapper = dict(optimizer=dict(lr=0.05))
param_scheduler = dict(milestones=[15])
train_cfg = dict(max_epochs=20, val_interval=5)
