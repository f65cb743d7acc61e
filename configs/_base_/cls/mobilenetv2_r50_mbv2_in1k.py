# ResNet-50 (teacher, mmpretrain model zoo, 76.55 top-1) -> MobileNetV2 (student) on
# ImageNet-1k: the student's own mmpretrain config (300 epochs, SGD lr 0.045, batch 8x32) with
# its model wrapped in mmkd's ClsDistiller. Method configs add `distill_losses`.
_base_ = ['mmpretrain::mobilenet_v2/mobilenet-v2_8xb32_in1k.py']
custom_imports = dict(imports=['mmkd'], allow_failed_imports=False)

model = dict(
    _delete_=True,
    type='mmkd.ClsDistiller',
    student=_base_.model,
    teacher='mmpretrain::resnet/resnet50_8xb32_in1k.py',
    teacher_ckpt='https://download.openmmlab.com/mmclassification/v0/resnet/'
    'resnet50_8xb32_in1k_20210831-ea4938fc.pth')
