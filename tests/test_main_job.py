"""The README's main job end to end: `python jobs/pipeline.py` (what scripts/quickstart.sh runs) on the shipped sample (few steps), then a cached re-run."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from ray_head import SMALL_JOB_OVERRIDES, as_sets

from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.slow


def _run_job(out, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "DS_ACCELERATOR": "cpu"}
    cmd = [
        sys.executable,
        str(REPO_ROOT / "jobs" / "pipeline.py"),
        "--out",
        str(out),
        *as_sets(SMALL_JOB_OVERRIDES),
        *extra,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=1500, env=env, cwd=REPO_ROOT)


def test_main_job_runs_every_stage_then_resumes_from_cache(tmp_path):
    out = tmp_path / "job"
    first = _run_job(out)
    assert first.returncode == 0, first.stderr[-4000:]
    results = (out / "results.md").read_text(encoding="utf-8")
    assert "| ndcg@10 |" in results and "BM25-kiwi" in results
    for stage in ("backbone", "mined", "augmented", "train", "evaluate"):
        assert (out / stage / "_stage.json").is_file(), stage
    model_metrics = json.loads((out / "evaluate" / "model" / "metrics.json").read_text())
    bm25_metrics = json.loads((out / "evaluate" / "bm25-kiwi" / "metrics.json").read_text())
    assert model_metrics["num_queries"] == bm25_metrics["num_queries"] > 0
    assert 0.0 <= model_metrics["ndcg@10"] <= 1.0
    # the model carries the translation prior learned from the sample's glossary and parallel text
    raysparse_json = json.loads((out / "train" / "model" / "raysparse.json").read_text())
    assert raysparse_json["has_translation_table"] and raysparse_json["translation_prior"] > 0

    # Same configuration again: every stage is up to date, nothing is recomputed.
    second = _run_job(out)
    assert second.returncode == 0, second.stderr[-4000:]
    assert (
        "Stages: backbone cached, mine cached, augment cached, train cached, evaluate cached" in second.stdout
    )

    # A changed evaluation setting re-runs only the evaluation.
    third = _run_job(out, "--set", "eval.bm25_analyzer=bigram")
    assert third.returncode == 0, third.stderr[-4000:]
    assert "train cached" in third.stdout and "evaluate cached" not in third.stdout
    assert "BM25-bigram" in (out / "results.md").read_text(encoding="utf-8")
