"""The teacher-student distiller base: a student, a frozen teacher and distillation losses.

Task distillers (classification, two-stage and dense detection, semantic
segmentation) subclass :class:`TeacherStudentDistiller` and implement
:meth:`~StudentDistiller.loss`, calling the student's and the teacher's own
public methods. On top of :class:`~mmkd.models.distillers.StudentDistiller`
(student, losses, hooks, key checks) this class

* builds the teacher from a model dict or a config
  (``'mmdet::faster_rcnn/faster-rcnn_r101_fpn_1x_coco.py'`` or a path);
* loads ``teacher_ckpt`` (path or URL, on the CPU) strictly, freezes the
  teacher and keeps it in ``eval()`` whatever mode the distiller is put in;
* converts the student's normalised batch for a teacher that normalises
  differently (:meth:`teacher_inputs`);
* runs several teachers (``teachers=[...]``), each built, loaded, frozen and
  re-normalised like a single one, and gives the losses the weighted mean of
  their outputs (:meth:`teacher_outputs`);
* runs the teachers' forward in bf16 / fp16 under autocast
  (``teacher_dtype``); the losses still compute in float32.
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
from mmengine.logging import print_log
from torch import Tensor, nn

from mmkd.utils import load_checkpoint_file
from mmkd.utils.compat import image_normalisation

from .base import ModelCfg, StudentDistiller, build_model_from_cfg


def load_teacher_checkpoint(teacher: nn.Module, filename: str) -> dict:
    """Loads ``filename`` (a path or URL) into ``teacher`` on the CPU, strictly.

    Accepts plain model checkpoints and mmkd distiller checkpoints (whose
    ``student.`` weights are taken). A missing, truncated or non-checkpoint
    file, or keys that do not fit the teacher, raise an error naming
    ``teacher_ckpt`` and the file: no silent random teacher. The file is read
    with :func:`mmkd.utils.safe_load` (``weights_only=True`` and mmkd's
    allowlist; a URL is downloaded into the cache first), in any process.
    """
    ckpt = load_checkpoint_file(filename, map_location='cpu', what='teacher_ckpt')
    state = ckpt.get('state_dict', ckpt) if isinstance(ckpt, dict) else ckpt
    state = {k[7:] if k.startswith('module.') else k: v for k, v in state.items()}
    if any(k.startswith('student.') for k in state):
        state = {k[8:]: v for k, v in state.items() if k.startswith('student.')}
    own = teacher.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or mismatched:
        def show(keys: List[str]) -> str:
            return f'{len(keys)} (e.g. {keys[:3]})' if keys else '0'
        raise RuntimeError(
            f'teacher_ckpt {filename!r} does not fit the teacher model '
            f'({type(teacher).__name__}): missing keys {show(missing)}, unexpected keys '
            f'{show(unexpected)}, shape mismatches {show(mismatched)}. Check that '
            'the teacher config matches the checkpoint (depth, number of classes).')
    teacher.load_state_dict(state, strict=True)
    meta = ckpt.get('meta') if isinstance(ckpt, dict) else None
    return meta if isinstance(meta, dict) else {}


def checkpoint_class_names(meta: dict) -> Optional[List[str]]:
    """Class names a checkpoint's ``meta`` records: ``dataset_meta.classes`` (MMEngine
    runners), or ``CLASSES`` (mmdet 2.x / mmcls model-zoo files)."""
    names = (meta.get('dataset_meta') or {}).get('classes') or meta.get('CLASSES')
    return list(names) if names else None


def config_class_names(cfg: ModelCfg) -> Optional[List[str]]:
    """Class names of a model given as a config file: its training set's ``metainfo``
    classes, or its dataset type's ``METAINFO`` (``CocoDataset``: the 80 COCO classes)."""
    if not isinstance(cfg, str):
        return None
    from mmengine.config import Config
    from mmengine.hub import get_config
    from mmengine.registry import DATASETS
    full = get_config(cfg) if '::' in cfg else Config.fromfile(cfg)
    dataset = (full.get('train_dataloader') or {}).get('dataset') or {}
    while 'dataset' in dataset:  # RepeatDataset, ClassBalancedDataset...
        dataset = dataset['dataset']
    names = (dataset.get('metainfo') or {}).get('classes')
    if not names and isinstance(dataset.get('type'), str):
        scope = full.get('default_scope')
        kind = dataset['type'] if '.' in dataset['type'] or not scope else \
            f'{scope}.{dataset["type"]}'
        names = (getattr(DATASETS.get(kind), 'METAINFO', None) or {}).get('classes')
    return list(names) if names else None


class Renormalise(nn.Module):
    """Turns a batch normalised for one model into the batch another model expects.

    ``x * std_s + mean_s`` undoes the student's normalisation, a channel flip
    swaps BGR/RGB if only one of them converts, ``(x - mean_t) / std_t``
    applies the teacher's. The statistics are (non-persistent) buffers, so they
    follow the distiller through ``.to()``, ``.cuda()`` and ``.double()`` and
    are not written to checkpoints. Given the batch's data samples, the padded
    border of each image (outside its ``img_shape``) gets the teacher's own
    padding value, as if the teacher's preprocessor had padded it, instead of
    the re-normalised student padding.
    """

    def __init__(self, mean_s: Tensor, std_s: Tensor, flip: bool, mean_t: Tensor,
                 std_t: Tensor, pad_value: float = 0.0) -> None:
        super().__init__()
        self.flip = flip
        self.pad_value = float(pad_value)
        for name, value in (('mean_s', mean_s), ('std_s', std_s), ('mean_t', mean_t),
                            ('std_t', std_t)):
            self.register_buffer(name, value.detach().clone().reshape(-1, 1, 1),
                                 persistent=False)

    @classmethod
    def between(cls, student: nn.Module, teacher: nn.Module) -> Optional[Renormalise]:
        """The conversion from the student's preprocessing to the teacher's, None if equal."""
        mean_s, std_s, rgb_s = image_normalisation(student.data_preprocessor)
        mean_t, std_t, rgb_t = image_normalisation(teacher.data_preprocessor)
        if rgb_s == rgb_t and (mean_s is None) == (mean_t is None) and (
                mean_s is None or (torch.equal(mean_s, mean_t) and torch.equal(std_s, std_t))):
            return None
        zeros, ones = torch.zeros(3), torch.ones(3)
        pre_t = teacher.data_preprocessor  # mmengine / mmdet: pad_value; mmseg: pad_val
        pad = getattr(pre_t, 'pad_value', getattr(pre_t, 'pad_val', 0))
        return cls(zeros if mean_s is None else mean_s, ones if std_s is None else std_s,
                   rgb_s != rgb_t, zeros if mean_t is None else mean_t,
                   ones if std_t is None else std_t, pad)

    def forward(self, inputs: Tensor, data_samples: Optional[list] = None) -> Tensor:
        x = inputs * self.std_s + self.mean_s
        if self.flip:
            x = x.flip(1)
        x = (x - self.mean_t) / self.std_t
        for i, sample in enumerate(data_samples or []):
            shape = getattr(sample, 'metainfo', {}).get('img_shape')
            if shape is not None:
                h, w = shape[:2]
                x[i, :, h:] = self.pad_value
                x[i, :, :, w:] = self.pad_value
        return x

    def extra_repr(self) -> str:
        return f'flip={self.flip}, pad_value={self.pad_value}'


#: ``teacher_dtype`` names -> autocast dtypes.
TEACHER_DTYPES = {'bf16': torch.bfloat16, 'fp16': torch.float16}


def weighted_mean(outputs: Sequence[Any], weights: Sequence[float]) -> Any:
    """The weighted mean of equally structured outputs (tensors in tuples, lists, dicts)."""
    first = outputs[0]
    if isinstance(first, Tensor):
        total = first.float() * weights[0]
        for out, w in zip(outputs[1:], weights[1:]):
            total = total + out.float() * w
        return total
    if isinstance(first, dict):
        return {k: weighted_mean([o[k] for o in outputs], weights) for k in first}
    if isinstance(first, (list, tuple)):
        return type(first)(weighted_mean(list(parts), weights) for parts in zip(*outputs))
    if first is None:
        return None
    raise TypeError(f'cannot average teacher outputs of type {type(first).__name__}')


class TeacherStudentDistiller(StudentDistiller):
    """Base class of the teacher-student distillers.

    Args:
        student (dict | str): The student model config (an mmdet / mmseg /
            mmpretrain model dict).
        teacher (dict | str, optional): The teacher model config, or the path
            of a config file, also as ``'mmdet::path/in/package.py'``. Give it
            or ``teachers``. Defaults to None.
        teacher_ckpt (str, optional): Path or URL of the teacher checkpoint.
            ``None`` leaves the teacher randomly initialised (for tests and
            ``tools/test.py`` only; a warning says so). Defaults to None.
        distill_losses (dict, optional): ``name -> loss config``; each adds the
            key ``loss_<name>``. Defaults to None.
        data_preprocessor (dict, optional): See
            :class:`~mmkd.models.distillers.StudentDistiller`. Defaults to None.
        init_cfg (dict, optional): Initialisation config. Defaults to None.
        teachers (list[dict], optional): Several teachers instead of
            ``teacher`` / ``teacher_ckpt``: ``dict(model=..., ckpt=None,
            weight=1.0)`` each. The losses get the weighted mean of the
            teachers' logits (weights normalised to sum 1): the averaged
            ensemble teacher of multi-teacher KD (Hinton et al., 2015, Sec. 3;
            You et al., "Learning from Multiple Teacher Networks", KDD 2017).
            Defaults to None.
        teacher_dtype (str, optional): ``'bf16'`` or ``'fp16'``: run the
            teachers' forward under autocast in that precision (CPU: bf16
            only). Defaults to None (the teachers' own dtype).
        student_classes (Sequence[str], optional): The student's class names
            (its dataset's ``metainfo['classes']``). Given, every teacher's
            logits are restricted to these classes by name (a teacher trained
            on more classes: a COCO-80 detector for a 3-class student), before
            any softmax of the losses; RoI heads keep their background. The
            teacher's names come from ``teacher_classes`` (``classes`` in a
            ``teachers`` entry), else its checkpoint's ``meta``, else its
            config's dataset. Defaults to None (same classes, same order).
        teacher_classes (Sequence[str], optional): The single teacher's class
            names, in the order of its outputs. Defaults to None.
    """

    def __init__(self,
                 student: ModelCfg,
                 teacher: Optional[ModelCfg] = None,
                 teacher_ckpt: Optional[str] = None,
                 distill_losses: Optional[Dict[str, dict]] = None,
                 data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[dict] = None,
                 teachers: Optional[List[dict]] = None,
                 teacher_dtype: Optional[str] = None,
                 student_classes: Optional[Sequence[str]] = None,
                 teacher_classes: Optional[Sequence[str]] = None) -> None:
        super().__init__(student, distill_losses, data_preprocessor, init_cfg)
        specs = teacher_specs(teacher, teacher_ckpt, teachers, teacher_classes)
        if teacher_dtype is not None and teacher_dtype not in TEACHER_DTYPES:
            raise ValueError(f'teacher_dtype must be one of {sorted(TEACHER_DTYPES)} or None, '
                             f'got {teacher_dtype!r}')
        self.teacher_dtype = teacher_dtype
        #: Attribute names of the teachers: ``teacher``, ``teacher_1``, ...
        self.teacher_names: List[str] = []
        total = sum(spec[2] for spec in specs)
        #: Weights of the teachers' outputs (sum 1).
        self.teacher_weights = [spec[2] / total for spec in specs]
        self.student_classes = None if student_classes is None else list(student_classes)
        #: ``teacher name -> its class names`` (with ``student_classes``).
        self.teacher_class_names: Dict[str, List[str]] = {}
        for i, (cfg, ckpt, _, names) in enumerate(specs):
            name = 'teacher' if i == 0 else f'teacher_{i}'
            model = build_model_from_cfg(cfg)
            meta = {}
            if ckpt is not None:
                meta = load_teacher_checkpoint(model, ckpt)
            else:
                print_log(f'mmkd: {name}: no checkpoint, the teacher keeps its initial weights '
                          '(right for tools/test.py and for loading a distiller checkpoint, '
                          'which holds the teacher; wrong for training from scratch)',
                          logger='current', level=30)
            model.requires_grad_(False)
            model.eval()
            self.add_module(name, model)
            #: Student batch -> this teacher's batch, or None when both preprocess alike.
            setattr(self, 'renormalise' if i == 0 else f'renormalise_{i}',
                    Renormalise.between(self.student, model))
            self.teacher_names.append(name)
            if self.student_classes is not None:
                names = names or checkpoint_class_names(meta) or config_class_names(cfg)
                if not names:
                    raise ValueError(
                        f'student_classes is set but the class names of {name} are unknown: '
                        'give them (teacher_classes=[...], or classes=[...] in its teachers '
                        'entry); neither its checkpoint meta nor its config records them')
                self.teacher_class_names[name] = list(names)
                missing = [c for c in self.student_classes if c not in names]
                if missing:
                    raise ValueError(f'student classes {missing} are not among the '
                                     f'{len(names)} classes of {name} (its classes: '
                                     f'{list(names)[:10]}{" ..." if len(names) > 10 else ""})')
                #: The teacher's output index of every student class.
                self.register_buffer(f'class_index_{i}', torch.tensor(
                    [list(names).index(c) for c in self.student_classes]), persistent=False)
        self.teacher_ckpt = specs[0][1]

    @property
    def teachers(self) -> List[Tuple[str, nn.Module]]:
        """``(name, model)`` of every teacher."""
        return [(name, getattr(self, name)) for name in self.teacher_names]

    def init_weights(self) -> None:
        """Initialises the student only: the teachers keep their checkpoints."""
        self.student.init_weights()

    def train(self, mode: bool = True) -> TeacherStudentDistiller:
        super().train(mode)
        for _, teacher in self.teachers:
            teacher.eval()
        return self

    def teacher_inputs(self, inputs: Tensor, data_samples: Optional[list] = None,
                       index: int = 0) -> Tensor:
        """The student's normalised batch, re-normalised for teacher ``index``.

        With ``data_samples`` (detection, segmentation), the padding outside
        each image's ``img_shape`` gets the teacher's padding value.
        """
        norm = self.renormalise if index == 0 else getattr(self, f'renormalise_{index}')
        if norm is None:
            return inputs
        return norm(inputs, data_samples)

    def class_index(self, teacher: str) -> Optional[Tensor]:
        """The output index of every student class in ``teacher`` (None: same classes)."""
        if self.student_classes is None:
            return None
        return getattr(self, f'class_index_{self.teacher_names.index(teacher)}')

    def distilled_classes(self, teacher: str, num_classes: int) -> int:
        """How many of ``teacher``'s ``num_classes`` classes the losses see: all, or
        the student's under ``student_classes`` (checked against its class names)."""
        if self.student_classes is None:
            return num_classes
        names = self.teacher_class_names[teacher]
        if len(names) != num_classes:
            raise ValueError(f'{teacher} predicts {num_classes} classes but {len(names)} class '
                             f'names were given or found for it')
        return len(self.student_classes)

    def select_classes(self, output: Any, index: Tensor) -> Any:
        """A teacher's output restricted to the student's classes (``index`` along
        dim 1 of every tensor). Distillers whose outputs differ override it."""
        if isinstance(output, Tensor):
            return output.index_select(1, index)
        if isinstance(output, dict):
            return {k: self.select_classes(v, index) for k, v in output.items()}
        if isinstance(output, (list, tuple)):
            return type(output)(self.select_classes(v, index) for v in output)
        return output

    def teacher_outputs(self, fn: Callable[[nn.Module, Tensor], Any], inputs: Tensor,
                        data_samples: Optional[list] = None) -> Any:
        """``fn(teacher, its batch)`` for every teacher, combined for the losses.

        Runs without gradients (and under autocast with ``teacher_dtype``),
        restricts each teacher's outputs to the student's classes with
        ``student_classes`` (:meth:`select_classes`). One teacher: what ``fn``
        returns. Several: the weighted mean of what they return (tensors, or
        tuples / lists / dicts of tensors, alike in shape: logits, not
        features).
        """
        outputs = []
        with torch.no_grad(), self.teacher_precision(inputs):
            for i, (name, teacher) in enumerate(self.teachers):
                out = fn(teacher, self.teacher_inputs(inputs, data_samples, i))
                index = self.class_index(name)
                outputs.append(out if index is None else self.select_classes(out, index))
        if len(outputs) == 1:
            return outputs[0]
        return weighted_mean(outputs, self.teacher_weights)

    @contextlib.contextmanager
    def teacher_precision(self, inputs: Tensor) -> Iterator[None]:
        """Autocast in ``teacher_dtype`` on the inputs' device (nothing without one)."""
        if self.teacher_dtype is None:
            yield
            return
        device = inputs.device.type
        if self.teacher_dtype == 'fp16' and device != 'cuda':
            raise ValueError(f"{type(self).__name__}: teacher_dtype='fp16' needs a CUDA device "
                             f"(the batch is on {device}); use 'bf16' on the CPU")
        with torch.autocast(device_type=device, dtype=TEACHER_DTYPES[self.teacher_dtype]):
            yield


def teacher_specs(teacher: Optional[ModelCfg], teacher_ckpt: Optional[str],
                  teachers: Optional[List[dict]], teacher_classes: Optional[Sequence[str]] = None
                  ) -> List[Tuple[ModelCfg, Optional[str], float, Optional[List[str]]]]:
    """``(model, ckpt, weight, classes)`` of every teacher, from ``teacher`` or ``teachers``."""
    if teachers is None:
        if teacher is None:
            raise ValueError('give the teacher: teacher=<model dict or config> (and '
                             'teacher_ckpt), or teachers=[dict(model=..., ckpt=..., weight=...)]')
        return [(teacher, teacher_ckpt, 1.0,
                 None if teacher_classes is None else list(teacher_classes))]
    if teacher is not None or teacher_ckpt is not None or teacher_classes is not None:
        raise ValueError('give either teacher / teacher_ckpt (/ teacher_classes) or '
                         'teachers=[...], not both')
    if not isinstance(teachers, (list, tuple)) or not teachers:
        raise ValueError(f'teachers must be a non-empty list of dict(model=..., ckpt=..., '
                         f'weight=...), got {teachers!r}')
    specs = []
    for i, spec in enumerate(teachers):
        keys = {'model', 'ckpt', 'weight', 'classes'}
        unknown = set(spec) - keys if isinstance(spec, dict) else None
        if unknown is None or unknown or 'model' not in spec:
            raise ValueError(f'teachers[{i}] must be dict(model=..., ckpt=None, weight=1.0, '
                             f'classes=None), got {spec!r}')
        weight = spec.get('weight', 1.0)
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or \
                not weight > 0 or weight == float('inf'):
            raise ValueError(f'teachers[{i}].weight must be a positive finite number, got '
                             f'{weight!r}')
        classes = spec.get('classes')
        specs.append((spec['model'], spec.get('ckpt'), float(weight),
                      None if classes is None else list(classes)))
    return specs
