#!/usr/bin/env bash
# The README's first command: install, then run the main job (data -> mining -> augmentation -> training ->
# evaluation) on the Korean/English sample shipped inside the package. Offline; about 10 minutes on 2 CPU cores.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
# RAY_AUTH_MODE is left to the user: the job starts its own Ray on 127.0.0.1 (raysparse.ray_utils.init_ray)
export DS_ACCELERATOR=${DS_ACCELERATOR:-cpu}
exec python3 jobs/pipeline.py "$@"
