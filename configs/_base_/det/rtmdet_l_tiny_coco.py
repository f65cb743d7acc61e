# RTMDet-l (teacher, mmdet model zoo rtmdet_l_8xb32-300e_coco, 51.3 box AP)
# -> RTMDet-tiny (student, mmdet's rtmdet_tiny_8xb32-300e_coco, 40.9 box AP) on COCO, 300 epochs:
# the student's own mmdet config (pipelines, schedule, optimizer) with its model wrapped in
# mmkd's DenseHeadDistiller. Method configs add `distill_losses` (sigmoid-capable losses on the
# class scores of every level: use_sigmoid=True).
#
# RTMDet's training machinery, adapted to a distiller (custom_hooks below):
# - mmkd.StudentEMAHook instead of mmengine's EMAHook: the EMA averages the student only (the
#   frozen teacher is not copied), validation runs the student's EMA weights, checkpoints hold
#   the EMA student under state_dict (raw weights under ema_state_dict), and
#   tools/model_converters/extract_student.py writes the EMA student;
# - PipelineSwitchHook unchanged: the strong augmentation (mosaic, mixup) stops at epoch 280
#   (0-based) of 300;
# - mmkd.DistillLossScheduleHook(stop=281): distillation stops at the same point (1-based epoch
#   281 = 0-based epoch 280), as the mmyolo / MMRazor RTMDet distillation recipe stops at 280.
_base_ = ['mmdet::rtmdet/rtmdet_tiny_8xb32-300e_coco.py']
custom_imports = dict(imports=['mmkd'], allow_failed_imports=False)

model = dict(
    _delete_=True,
    type='mmkd.DenseHeadDistiller',
    student=_base_.model,
    teacher='mmdet::rtmdet/rtmdet_l_8xb32-300e_coco.py',
    teacher_ckpt='https://download.openmmlab.com/mmdetection/v3.0/rtmdet/'
    'rtmdet_l_8xb32-300e_coco/rtmdet_l_8xb32-300e_coco_20220719_112030-5a0be7c4.pth')

custom_hooks = [
    dict(type='mmkd.StudentEMAHook', ema_type='ExpMomentumEMA', momentum=0.0002,
         update_buffers=True, priority=49),
    dict(type='PipelineSwitchHook', switch_epoch=280,
         switch_pipeline=_base_.train_pipeline_stage2),
    dict(type='mmkd.DistillLossScheduleHook', stop=281),
]
