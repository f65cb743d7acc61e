# LightSKD (arXiv:2305.09183) self-distillation of ResNet-18 on ImageNet-1k, with the
# student's mmpretrain recipe (resnet18_8xb32_in1k: 100 epochs). DRG head on the second stage
# (128 channels), trained by its own cross-entropy; DRG T=4, weight 0.2; DSR T=4, weight 1.
_base_ = ['mmpretrain::resnet/resnet18_8xb32_in1k.py']
custom_imports = dict(imports=['mmkd'], allow_failed_imports=False)

model = dict(
    _delete_=True,
    type='mmkd.LightSKD',
    student=_base_.model,
    aux_head=dict(type='DRGHead', in_channels=128),
    aux_stage=1,
    aux_loss_weight=1.0,
    distill_losses=dict(
        drg=dict(type='DRGLoss', temperature=4.0, loss_weight=0.2),
        dsr=dict(type='DSRLoss', temperature=4.0, loss_weight=1.0)))
