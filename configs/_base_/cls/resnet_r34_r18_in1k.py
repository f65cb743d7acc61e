# ResNet-34 (teacher, mmpretrain model zoo, 73.62 top-1) -> ResNet-18 (student) on ImageNet-1k:
# the student's own mmpretrain config (100 epochs, SGD lr 0.1, batch 8x32) with its model
# wrapped in mmkd's ClsDistiller. Method configs add `distill_losses`.
_base_ = ['mmpretrain::resnet/resnet18_8xb32_in1k.py']
custom_imports = dict(imports=['mmkd'], allow_failed_imports=False)

model = dict(
    _delete_=True,
    type='mmkd.ClsDistiller',
    student=_base_.model,
    teacher='mmpretrain::resnet/resnet34_8xb32_in1k.py',
    teacher_ckpt='https://download.openmmlab.com/mmclassification/v0/resnet/'
    'resnet34_8xb32_in1k_20210831-f257d4e6.pth')
