# ResNet-18 for CIFAR (mmpretrain's ResNet_CIFAR: 3x3 stem, no max-pool) on CIFAR-100, with
# mmpretrain's CIFAR-100 recipe (that of resnet50_8xb16_cifar100: 200 epochs, SGD lr 0.1,
# weight decay 5e-4, steps at 60/120/160 x0.2, batch 8x16). mmpretrain ships no CIFAR-100
# ResNet-18 config or checkpoint: this is the student (and the baseline:
# `python tools/train.py configs/_base_/cls/resnet18_cifar100.py`).
_base_ = ['mmpretrain::resnet/resnet50_8xb16_cifar100.py']

model = dict(backbone=dict(depth=18), head=dict(in_channels=512))
