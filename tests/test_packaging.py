"""raysparse installed from a wheel works like the checkout (issue #19): packaged defaults, readable model files, and
the whole user path from an empty directory in a fresh virtual environment."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from ray_head import SMALL_JOB_OVERRIDES, as_sets

from raysparse.defaults import DEFAULT_CONFIG, TUNING_DIR, search_space_path
from raysparse.files import apply_umask

REPO = Path(__file__).resolve().parents[1]


def test_packaged_defaults_equal_the_repository_copies():
    """tuning/ and configs/default.yaml stay the user-editable copies; the package must carry the same files."""
    repo_spaces = sorted(p.name for p in (REPO / "tuning").glob("*.yaml"))
    assert repo_spaces and repo_spaces == sorted(p.name for p in TUNING_DIR.glob("*.yaml"))
    for name in repo_spaces:
        assert (TUNING_DIR / name).read_bytes() == (REPO / "tuning" / name).read_bytes(), (
            f"raysparse/resources/tuning/{name} differs from tuning/{name}: copy the edited one over"
        )
    assert DEFAULT_CONFIG.read_bytes() == (REPO / "configs" / "default.yaml").read_bytes(), (
        "raysparse/resources/configs/default.yaml differs from configs/default.yaml: copy the edited one over"
    )


def test_search_space_defaults_resolve_outside_the_checkout(tmp_path, monkeypatch):
    from raysparse.config import RaySparseConfig
    from raysparse.tune import load_search_space

    monkeypatch.chdir(tmp_path)  # an empty directory: no tuning/ here
    default = RaySparseConfig().tune.search_space
    assert search_space_path(default) == TUNING_DIR / "loss_weights.yaml"
    assert search_space_path("tiny") == search_space_path("tiny.yaml") == TUNING_DIR / "tiny.yaml"
    assert load_search_space(search_space_path(default)).params
    # a file of that name in the working directory (the user's edited copy) wins
    (tmp_path / "tuning").mkdir()
    own = tmp_path / "tuning" / "loss_weights.yaml"
    own.write_text("space:\n  loss.beta: {choice: [0.1]}\n", encoding="utf-8")
    assert search_space_path(default) == Path("tuning/loss_weights.yaml")
    assert list(load_search_space(search_space_path(default)).params) == ["loss.beta"]
    # an unknown name is left as it is, so the error names what the user typed
    assert search_space_path("tuning/nope.yaml") == Path("tuning/nope.yaml")


def _modes(directory: Path) -> dict[str, int]:
    return {p.name: stat.S_IMODE(p.stat().st_mode) for p in directory.iterdir() if p.is_file()}


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_model_files_follow_the_umask(tmp_path, umask):
    """transformers writes model.safetensors 0600; a saved backbone and SparseEncoder must follow the umask."""
    from raysparse.backbone import build_local_backbone
    from raysparse.config import ModelConfig
    from raysparse.model import SparseEncoder

    old = os.umask(umask)
    try:
        texts = ["검색 엔진은 역색인을 쓴다", "search engines use an inverted index"] * 20
        cfg = ModelConfig(vocab_size=200, hidden_size=16, num_layers=1, num_heads=1, intermediate_size=32)
        backbone = Path(build_local_backbone(texts, cfg, str(tmp_path / "backbone")))
        SparseEncoder.from_pretrained(backbone).save_pretrained(tmp_path / "model")
    finally:
        os.umask(old)
    wanted = 0o666 & ~umask
    for directory in (backbone, tmp_path / "model"):
        modes = _modes(directory)
        assert "model.safetensors" in modes
        assert all(mode == wanted for mode in modes.values()), {k: oct(v) for k, v in modes.items()}


def test_apply_umask_only_adds_what_the_umask_allows(tmp_path):
    f = tmp_path / "w.bin"
    f.write_bytes(b"x")
    f.chmod(0o600)
    old = os.umask(0o077)
    try:
        apply_umask(tmp_path)
        assert stat.S_IMODE(f.stat().st_mode) == 0o600  # a private umask keeps it private
        os.umask(0o022)
        apply_umask(f)
        assert stat.S_IMODE(f.stat().st_mode) == 0o644
    finally:
        os.umask(old)


# ---------------------------------------------------------------------------------------------------------------
# The wheel, installed into a fresh virtual environment, run from an empty directory
# ---------------------------------------------------------------------------------------------------------------

SMALL = as_sets(
    [
        *SMALL_JOB_OVERRIDES,
        "train.max_steps=2",  # later settings win
        # character bigrams instead of Kiwi for BM25 (mining, baseline): the same code paths, ~35x less tokenising
        "mining.analyzer=bigram",
        "eval.bm25_analyzer=bigram",
    ]
)


def _location(stdout: str, kind: str) -> str:
    found = re.findall(rf"^{kind}: (\S+)$", stdout, flags=re.M)
    assert found, f"no '{kind}: LOCATION' line in:\n{stdout[-3000:]}"
    return found[-1]


@pytest.mark.slow
@pytest.mark.timeout(3600)  # a main job + a one-trial sweep in subprocesses; 9 min on the loaded 2-core VM
def test_wheel_in_a_fresh_venv_runs_from_an_empty_directory(tmp_path):
    dist = tmp_path / "dist"
    # a clean copy of the source: a build/ left in the checkout could put stale modules into the wheel
    source = tmp_path / "source"
    shutil.copytree(
        REPO,
        source,
        ignore=shutil.ignore_patterns(
            ".git", "build", "dist", "*.egg-info", "__pycache__", "outputs", "runs", ".venv", ".*_cache"
        ),
    )
    # --no-isolation: build with the setuptools already installed (CI and this machine are offline but for PyPI,
    # and the project pins what it installs)
    built = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(dist), str(source)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    (wheel,) = dist.glob("raysparse-*.whl")

    venv = tmp_path / "venv"
    # --system-site-packages: torch, Ray, DeepSpeed... come from the system install (not re-downloaded); the wheel
    # itself goes into the venv with --no-deps, so `import raysparse` is the wheel's copy, not the checkout
    # --without-pip: ensurepip took over 300 s on the loaded VM; the system's pip (visible through
    # --system-site-packages) installs into the venv when the venv's python runs it
    subprocess.run(
        [sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)],
        check=True,
        timeout=600,
    )
    python = venv / "bin" / "python"
    installed = subprocess.run(
        [str(python), "-m", "pip", "install", "--no-deps", "--no-index", "--force-reinstall", str(wheel)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert installed.returncode == 0, installed.stderr[-3000:]

    work = tmp_path / "empty"
    work.mkdir()
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "RAY_ADDRESS", "RAY_JOB_CONFIG_JSON_ENV_VAR")
    }
    env.update(RAY_AUTH_MODE="disabled", DS_ACCELERATOR="cpu", PATH=f"{venv / 'bin'}:{env.get('PATH', '')}")
    raysparse = str(venv / "bin" / "raysparse")

    def run(
        *args: str, timeout: float = 1800
    ) -> subprocess.CompletedProcess:  # a hang guard, not a speed limit
        done = subprocess.run(
            [raysparse, *args], cwd=work, env=env, capture_output=True, text=True, timeout=timeout
        )
        assert done.returncode == 0, (
            f"raysparse {' '.join(args)}:\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
        )
        return done

    where = subprocess.run(
        [str(python), "-c", "import raysparse, sys; print(raysparse.__file__)"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert Path(where).is_relative_to(venv), f"raysparse imported from {where}, not from the installed wheel"

    assert run("--version").stdout.strip() == "raysparse 0.1.0"

    # the main job with the packaged default config (no configs/ here), a few steps
    job = run("run", "--out", "job", *SMALL)
    model = Path(_location(job.stdout, "model"))
    assert model == work / "job" / "train" / "model" and (model / "model.safetensors").is_file()
    assert stat.S_IMODE((model / "model.safetensors").stat().st_mode) & 0o044 == 0o044 & ~_umask()
    stage = json.loads((work / "job" / "backbone" / "_stage.json").read_text())
    sample = Path(where).parent / "resources" / "sample"  # the packaged sample: a BEIR directory

    # a sweep with the default search space (not in this directory: packaged), one trial
    sweep = run(
        "tune",
        "--triples",
        "job/augmented/triples",
        "--dev-beir",
        str(sample),
        "--out",
        "sweep",
        "--num-samples",
        "1",
        "--backbone",
        stage["info"]["backbone_dir"],
        "--set",
        "train.max_steps=2",
        "--set",
        "train.eval_every=1",
        "--set",
        "train.checkpoint_every=2",
        "--set",
        "train.deepspeed.precision=fp32",  # the evaluated weights are then exactly the shipped ones
    )
    best = Path(_location(sweep.stdout, "model"))
    assert best == work / "sweep" / "best_model" and (best / "model.safetensors").is_file()
    report = (work / "sweep" / "sweep_report.md").read_text()
    assert "| finished |" in report

    ev = run("evaluate", "--model", str(best), "--beir", str(sample), "--out", "eval", "--no-baseline")
    assert Path(_location(ev.stdout, "metrics")) == work / "eval" / "metrics.json"
    metrics = json.loads((work / "eval" / "metrics.json").read_text())
    assert metrics["num_queries"] > 0
    # the sweep's efficiency axis is evaluate's FLOPS of the chosen model on the same dev set
    chosen = json.loads((work / "sweep" / "best_trial.json").read_text())
    assert chosen["flops"] == pytest.approx(metrics["flops"], rel=1e-6)

    ex = run("export", "--model", str(best), "--out", "export", "--format", "torchscript")
    assert Path(_location(ex.stdout, "manifest")) == work / "export" / "manifest.json"
    assert json.loads((work / "export" / "manifest.json").read_text())["files"]


def _umask() -> int:
    from raysparse.files import current_umask

    return current_umask()
