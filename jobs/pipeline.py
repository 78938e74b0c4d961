"""The main job (the whole pipeline) as a Ray job: ``ray job submit --working-dir . -- python jobs/pipeline.py --config configs/X.yaml``.

Runs the stages in order (data -> backbone -> mine -> augment -> train -> evaluate) through ``raysparse run``. Every
stage records a content hash of its inputs and config in ``<output_dir>/<stage>/_stage.json``; a re-submitted job
skips the stages whose hash still matches and resumes training from its last checkpoint, so after a failure the same
command continues where the job stopped (``--force`` recomputes everything). The KubeRay RayJob in
deploy/kuberay/rayjob.yaml and scripts/quickstart.sh (with no arguments: configs/default.yaml on the embedded
Korean/English sample) run this file. All options: ``--help``.
"""

import sys

import _bootstrap  # noqa: F401  (puts the repository on sys.path when raysparse is not installed)

from raysparse.cli import main

if __name__ == "__main__":
    sys.exit(main(["run", *sys.argv[1:]]))
