# ReKD, ResNet-34 -> ResNet-18, on our 6-class data. Inherits mmkd's config BY PACKAGE: mmkd
# must be installed (a wheel, or pip install -e <mmkd checkout>) and imported before the
# config is parsed, which mmkd's tools/train.py does (in a checkout, or in the installed
# package under mmkd/.mim/tools, see ../README.md):
#   python $MMKD_TOOLS/train.py configs/rekd_resnet34_resnet18_shapes.py
_base_ = ['mmkd::rekd/resnet_r34_r18_in1k.py']
custom_imports = dict(imports=['mmkd'], allow_failed_imports=False)

model = dict(
    # our classes (the rest of the student is mmkd's, i.e. mmpretrain's ResNet-18)
    student=dict(head=dict(num_classes=6, topk=(1, ))),
    # the teacher trained on these classes with ./resnet34_shapes.py
    teacher='{{ fileDirname }}/resnet34_shapes.py',
    teacher_ckpt='{{$TEACHER_CKPT:work_dirs/resnet34_shapes/epoch_20.pth}}',
    # loss weight and hyper-parameters for 6 classes: merged into mmkd's ReKDLoss settings
    distill_losses=dict(rekd=dict(k=2, temperature=2.0, loss_weight=2.0)))

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
