# The teacher: mmpretrain's ResNet-34 trained on our own data, the 6-class shapes image folders
# (`python -m mmkd.datasets.synthetic data/shapes --tasks cls`; set SHAPES_ROOT elsewhere).
# An ImageNet teacher cannot be used: its 1000 classes are not ours.
#   python $MMKD_TOOLS/train.py configs/resnet34_shapes.py --work-dir work_dirs/resnet34_shapes
_base_ = ['mmpretrain::resnet/resnet34_8xb32_in1k.py']

model = dict(head=dict(num_classes=6, topk=(1, )))

# ----------------------------------------------------------------- data (32 x 32 images)
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
