# DeepLabV3 R101-D8 (teacher, mmseg model zoo, 80.20 mIoU) -> DeepLabV3 R18-D8 (student) on
# Cityscapes, 512x1024 crops, 80k iterations: the student's own mmseg config with its
# model wrapped in mmkd's SegDistiller. Method configs add `distill_losses`.
_base_ = ['mmseg::deeplabv3/deeplabv3_r18-d8_4xb2-80k_cityscapes-512x1024.py']
custom_imports = dict(imports=['mmkd'], allow_failed_imports=False)

model = dict(
    _delete_=True,
    type='mmkd.SegDistiller',
    student=_base_.model,
    teacher='mmseg::deeplabv3/deeplabv3_r101-d8_4xb2-80k_cityscapes-512x1024.py',
    teacher_ckpt='https://download.openmmlab.com/mmsegmentation/v0.5/deeplabv3/'
    'deeplabv3_r101-d8_512x1024_80k_cityscapes/'
    'deeplabv3_r101-d8_512x1024_80k_cityscapes_20200606_113503-9e428899.pth')
