# PSPNet R101-D8 (teacher, mmseg model zoo, 79.76 mIoU) -> PSPNet R18-D8 (student) on
# Cityscapes, 512x1024 crops, 80k iterations: the student's own mmseg config with its
# model wrapped in mmkd's SegDistiller. Method configs add `distill_losses`.
_base_ = ['mmseg::pspnet/pspnet_r18-d8_4xb2-80k_cityscapes-512x1024.py']
custom_imports = dict(imports=['mmkd'], allow_failed_imports=False)

model = dict(
    _delete_=True,
    type='mmkd.SegDistiller',
    student=_base_.model,
    teacher='mmseg::pspnet/pspnet_r101-d8_4xb2-80k_cityscapes-512x1024.py',
    teacher_ckpt='https://download.openmmlab.com/mmsegmentation/v0.5/pspnet/'
    'pspnet_r101-d8_512x1024_80k_cityscapes/'
    'pspnet_r101-d8_512x1024_80k_cityscapes_20200606_112211-e1e1100f.pth')
