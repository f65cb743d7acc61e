#!/usr/bin/env bash
# The main job on an embedded default: set up (first run only), then the demo.
#   bash tools/demo.sh [--method dist|rekd|kd|dkd|rld|sdd|ls-kd ...] [--quick] [--work-dir DIR]
# Default: DIST (the clear gain on this data); --method rekd: the flagship ReKD config.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$ROOT/tools/install.sh"
cd "$ROOT"
exec "${MMKD_VENV:-$ROOT/.venv}/bin/python" tools/demo.py "$@"
