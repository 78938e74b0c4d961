#!/usr/bin/env bash
# Install raysparse and its pinned stack into the current Python: torch FIRST (pinned), then everything else with
# the same constraints so nothing pulls a second torch build. Idempotent: re-running is fast when all is installed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
torch_pin=$(grep -E '^torch==' constraints.txt)
if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.__version__.split('+')[0] == '${torch_pin#torch==}' else 1)" 2>/dev/null; then
  echo "[install] $torch_pin (first, pinned)"
  "$PY" -m pip install -q --disable-pip-version-check "$torch_pin"
fi
echo "[install] raysparse[dev] with constraints.txt"
"$PY" -m pip install -q --disable-pip-version-check -c constraints.txt -e ".[dev]"
