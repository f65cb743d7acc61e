#!/usr/bin/env bash
# The main job on an embedded default: set up (first run only), then the demo.
#   bash tools/demo.sh [--method rekd|kd|dist|dkd|rld|sdd|ls-kd] [--quick] [--work-dir DIR]
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$ROOT/tools/install.sh"
cd "$ROOT"
exec "${MMKD_VENV:-$ROOT/.venv}/bin/python" tools/demo.py "$@"
