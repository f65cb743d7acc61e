#!/usr/bin/env bash
# Set up (first run: ~15 min, mostly compiling mmcv once) and run the test suite.
#   bash tools/run_tests.sh [pytest args...]
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$ROOT/tools/install.sh"
cd "$ROOT"
exec "${MMKD_VENV:-$ROOT/.venv}/bin/python" -m pytest "${@:-tests}"
