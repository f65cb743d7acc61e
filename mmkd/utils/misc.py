"""Small helpers of the tools."""
import os.path as osp


def default_work_dir(config: str) -> str:
    """``./work_dirs/<folder>/<config name>``, e.g. ``work_dirs/rekd/faster-rcnn_r101_r50_coco``.

    mmkd's method folders hold configs of the same name (``configs/kd/x.py``
    and ``configs/dist/x.py``), so the folder is part of the default.
    """
    folder = osp.basename(osp.dirname(osp.abspath(config)))
    name = osp.splitext(osp.basename(config))[0]
    if folder in ('configs', ''):  # a project's own configs/ folder
        return osp.join('./work_dirs', name)
    return osp.join('./work_dirs', folder, name)
