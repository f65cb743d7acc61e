#!/usr/bin/env bash
# Set up mmkd and the OpenMMLab stack in a virtual environment inside the repo.
#
#   bash tools/install.sh            # idempotent: seconds when everything is in place
#   MMKD_VENV=/path/venv bash tools/install.sh
#
# What it does, in order (each step is skipped when already done):
#   1. creates the virtual environment (default: <repo>/.venv);
#   2. installs torch 2.13.0 + torchvision 0.28.0 from PyPI. These are the CUDA
#      builds, which run on a CPU-only machine; the local CPU torch wheel cannot
#      be used because PyPI's torchvision is linked against the CUDA build;
#   3. builds mmcv 2.1.0 with its compiled ops (nms, RoIAlign, ...) ONCE and
#      keeps the wheel in a cache outside the repo, keyed by mmcv/torch/Python
#      ($MMKD_CACHE, default ~/.cache/mmkd). The first build takes 6-10
#      minutes on 2 cores (6 measured on an idle machine, 10 on a busy one;
#      -O2 -g0, see below); later installs reuse the wheel;
#   4. installs mmengine, mmdet, mmsegmentation, mmpretrain (pinned in
#      tools/constraints.txt) and mmkd itself (editable, with the `tests` extra).
#
# On a GPU node with internet access to OpenMMLab's download site you may
# prefer a prebuilt mmcv: `pip install -U openmim && mim install mmcv==2.1.0`
# inside your own environment, then `pip install -e .[all]`.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${MMKD_VENV:-$ROOT/.venv}
CACHE=${MMKD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mmkd}
CONSTRAINTS=$ROOT/tools/constraints.txt
PY_BOOT=${PYTHON:-python3}
TORCH_VERSION=2.13.0
TORCHVISION_VERSION=0.28.0
MMCV_VERSION=2.1.0
# The PyPI build of torch, not a local CPU wheel (see step 2 above): ignore
# machine-wide pip config that points at local wheel folders.
unset PIP_FIND_LINKS PIP_EXTRA_INDEX_URL
export PIP_CONFIG_FILE=/dev/null
export PIP_DISABLE_PIP_VERSION_CHECK=1

say() { printf '[mmkd-install %s] %s\n' "$(date +%H:%M:%S)" "$*"; }

# Everything this script installs, hashed: a matching stamp means "done".
stamp_input() { cat "$ROOT/tools/install.sh" "$CONSTRAINTS" "$ROOT/pyproject.toml"; }
STAMP=$VENV/.mmkd-install-stamp
want_stamp=$(stamp_input | sha256sum | cut -d' ' -f1)

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want_stamp" ] \
    && "$VENV/bin/python" -c "import mmcv.ops, mmdet, mmseg, mmpretrain, mmkd" 2>/dev/null; then
  say "environment $VENV is up to date"
  exit 0
fi

# Python 3.10-3.12: torch 2.13 needs >= 3.10, numpy 1.26.4 (the stack's pin) has no 3.13 build.
if ! "$PY_BOOT" -c 'import sys; sys.exit(not (3, 10) <= sys.version_info[:2] <= (3, 12))'; then
  say "Python $("$PY_BOOT" -c 'import platform; print(platform.python_version())') is not supported: the pinned stack needs Python 3.10-3.12 (tested: 3.11); set PYTHON=/path/to/python3.11"
  exit 1
fi

# 1. virtual environment
if [ ! -x "$VENV/bin/python" ]; then
  say "creating virtual environment $VENV"
  "$PY_BOOT" -m venv "$VENV"
fi
PY=$VENV/bin/python
PIP=("$PY" -m pip install --progress-bar off -c "$CONSTRAINTS")
"$PY" -m pip install -q --progress-bar off -U "pip>=24"
"${PIP[@]}" -q setuptools wheel ninja "numpy==1.26.4"

# 2. torch + torchvision
have_torch=$("$PY" -c "import torch, torchvision; print(torch.__version__.split('+')[0], torchvision.__version__.split('+')[0])" 2>/dev/null || true)
if [ "$have_torch" != "$TORCH_VERSION $TORCHVISION_VERSION" ]; then
  say "installing torch $TORCH_VERSION + torchvision $TORCHVISION_VERSION from PyPI (a few GB, a few minutes)"
  # A CPU-only torch build of the same version would "satisfy" the pin: remove it.
  "$PY" -m pip uninstall -q -y torch torchvision 2>/dev/null || true
  "${PIP[@]}" "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION"
fi
PYTAG=$("$PY" -c "import sys; print(f'cp{sys.version_info[0]}{sys.version_info[1]}')")
TORCH_FULL=$("$PY" -c "import torch; print(torch.__version__.replace('+', '_'))")

# 3. mmcv with ops, built once and cached
"${PIP[@]}" -q "mmengine==0.10.7"  # mmcv's own dependencies come with it
if ! "$PY" -c "import mmcv, mmcv.ops; assert mmcv.__version__ == '$MMCV_VERSION'" 2>/dev/null; then
  WHEELS=$CACHE/wheels/mmcv-$MMCV_VERSION-torch$TORCH_FULL-$PYTAG
  mkdir -p "$WHEELS"
  if ! ls "$WHEELS"/mmcv-"$MMCV_VERSION"-*.whl >/dev/null 2>&1; then
    LOG=$CACHE/mmcv-build.log
    say "building mmcv $MMCV_VERSION with its C++ ops for CPU: done once, 6-10 min on 2 cores"
    say "(full log: $LOG; progress below counts compiled files)"
    # -O2 -g0: optimised ops without debug info (setting CFLAGS replaces the
    # default -O3 -g; the debug info only lengthens the 77-file compile).
    MMCV_WITH_OPS=1 FORCE_CUDA=0 MAX_JOBS=${MAX_JOBS:-$(nproc)} CFLAGS="${CFLAGS:--O2} -g0" \
      CXXFLAGS="${CXXFLAGS:--O2} -g0" \
      "$PY" -m pip wheel -v --no-build-isolation --no-deps --no-binary mmcv \
      -w "$WHEELS" "mmcv==$MMCV_VERSION" >"$LOG" 2>&1 &
    build_pid=$!
    last=""
    while kill -0 "$build_pid" 2>/dev/null; do
      sleep 20
      cur=$(grep -aoE '^ *\[[0-9]+/[0-9]+\]' "$LOG" | tail -n 1 || true)
      if [ -n "$cur" ] && [ "$cur" != "$last" ]; then say "mmcv build $cur"; last=$cur; fi
    done
    if ! wait "$build_pid"; then
      tail -n 40 "$LOG"
      say "mmcv build FAILED; see $LOG"
      exit 1
    fi
    say "mmcv wheel cached in $WHEELS"
  else
    say "reusing cached mmcv wheel from $WHEELS"
  fi
  "${PIP[@]}" -q --find-links "$WHEELS" --no-index --no-deps "mmcv==$MMCV_VERSION"
  "${PIP[@]}" -q addict packaging Pillow pyyaml yapf "opencv-python==4.10.0.84"
fi

# 4. task packages and mmkd
say "installing mmdet, mmsegmentation, mmpretrain and mmkd (editable)"
"${PIP[@]}" -q "mmdet==3.3.0" "mmsegmentation==1.2.2" "mmpretrain==1.2.0" \
  ftfy regex -e "$ROOT[tests]"

say "checking that the stack imports"
"$PY" - <<'EOF'
import torch, torchvision, mmcv, mmcv.ops, mmengine, mmdet, mmseg, mmpretrain, mmkd
print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, mmcv {mmcv.__version__}, "
      f"mmengine {mmengine.__version__}, mmdet {mmdet.__version__}, mmseg {mmseg.__version__}, "
      f"mmpretrain {mmpretrain.__version__}, mmkd {mmkd.__version__}")
EOF
echo "$want_stamp" >"$STAMP"
say "done: activate with 'source ${VENV}/bin/activate'"
