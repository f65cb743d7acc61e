from .distill_loss_schedule_hook import DistillLossScheduleHook
from .student_ema_hook import StudentEMAHook, check_ema_hooks

__all__ = ['DistillLossScheduleHook', 'StudentEMAHook', 'check_ema_hooks']
