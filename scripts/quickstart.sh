#!/usr/bin/env bash
# The README's first command: install, then run the main job (data -> mining -> augmentation -> training ->
# evaluation) on the Korean/English sample shipped inside the package. Offline; about 10 minutes on 2 CPU cores.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
export DS_ACCELERATOR=${DS_ACCELERATOR:-cpu} RAY_AUTH_MODE=${RAY_AUTH_MODE:-disabled}
exec python3 jobs/pipeline.py "$@"
