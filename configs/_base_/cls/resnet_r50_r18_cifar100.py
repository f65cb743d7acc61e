# ResNet-50 (teacher, mmpretrain model zoo resnet50_8xb16_cifar100, 79.90 top-1) -> ResNet-18
# (student, ./resnet18_cifar100.py) on CIFAR-100, both mmpretrain CIFAR ResNets
# (ResNet_CIFAR). Method configs add `distill_losses`.
_base_ = ['./resnet18_cifar100.py']
custom_imports = dict(imports=['mmkd'], allow_failed_imports=False)

model = dict(
    _delete_=True,
    type='mmkd.ClsDistiller',
    student=_base_.model,
    teacher='mmpretrain::resnet/resnet50_8xb16_cifar100.py',
    teacher_ckpt='https://download.openmmlab.com/mmclassification/v0/resnet/'
    'resnet50_b16x8_cifar100_20210528-67b58a1b.pth')
