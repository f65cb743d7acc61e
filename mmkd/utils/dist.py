"""torchrun on machines without GPUs (gloo backend, CPU DDP)."""
from __future__ import annotations

import torch
import torch.distributed as dist


def setup_cpu_distributed(cfg, launcher: str) -> bool:
    """Prepares ``launcher='pytorch'`` runs for a machine without CUDA devices.

    MMEngine's pytorch launcher calls ``torch.cuda.set_device`` and wraps the
    model with ``device_ids=[LOCAL_RANK]``, both of which fail without GPUs.
    Here the gloo process group is initialised first (the runner then skips
    its own initialisation) and DDP is configured for CPU modules
    (``device_ids=None``). Does nothing with GPUs or without a launcher.

    Args:
        cfg (Config): The runner config (``model_wrapper_cfg`` is set).
        launcher (str): The ``--launcher`` argument.

    Returns:
        bool: Whether the CPU set-up was applied.
    """
    if launcher != 'pytorch' or torch.cuda.is_available():
        return False
    if not dist.is_initialized():
        dist.init_process_group(backend='gloo')
    wrapper = dict(cfg.get('model_wrapper_cfg') or {})
    wrapper.setdefault('type', 'MMDistributedDataParallel')
    wrapper.update(device_ids=None)
    wrapper.setdefault('broadcast_buffers', False)
    wrapper.setdefault('find_unused_parameters', cfg.get('find_unused_parameters', False))
    cfg.model_wrapper_cfg = wrapper
    return True
