"""Sweep selection: Pareto front of (nDCG@10, FLOPS), FLOPS-budget choice, search-space validation."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from raysparse.config import ConfigError, RaySparseConfig
from raysparse.tune import load_search_space, pareto_front, select_trial, trial_config, write_sweep_report

SPACE_FILE = Path(__file__).resolve().parents[1] / "tuning" / "loss_weights.yaml"

TRIALS = [
    {"trial_id": "a", "ndcg@10": 0.50, "flops": 10.0, "config": {"loss.beta": 0.1}},
    {"trial_id": "b", "ndcg@10": 0.60, "flops": 20.0, "config": {"loss.beta": 0.3}},
    {"trial_id": "c", "ndcg@10": 0.40, "flops": 30.0, "config": {"loss.beta": 0.5}},  # dominated by a and b
    {
        "trial_id": "d",
        "ndcg@10": 0.60,
        "flops": 25.0,
        "config": {"loss.beta": 0.9},
    },  # dominated by b (same ndcg, more flops)
    {"trial_id": "e", "ndcg@10": math.nan, "flops": 5.0, "config": {"loss.beta": 1.0}},  # failed evaluation
]


def test_pareto_front():
    assert [p["trial_id"] for p in pareto_front(TRIALS)] == ["a", "b"]


def test_budget_selection():
    assert select_trial(TRIALS, flops_budget=None)["trial_id"] == "b"
    assert select_trial(TRIALS, flops_budget=15.0)["trial_id"] == "a"
    assert select_trial(TRIALS, flops_budget=1.0)["trial_id"] == "a"  # nothing fits: the cheapest valid trial
    assert select_trial([TRIALS[-1]], flops_budget=None) is None


def test_search_space_file_is_validated(tmp_path):
    space = load_search_space(SPACE_FILE)
    assert {"loss.beta", "loss.gamma_query", "loss.gamma_doc"} <= set(space.params)
    bad = tmp_path / "bad.yaml"
    bad.write_text("space:\n  loss.betta: {uniform: [0, 1]}\n")
    with pytest.raises(ConfigError, match=r"loss\.betta"):
        load_search_space(bad)
    bad.write_text("space:\n  loss.beta: {gaussian: [0, 1]}\n")
    with pytest.raises(ConfigError, match="unknown distribution"):
        load_search_space(bad)


def test_trial_config_applies_and_validates():
    cfg = trial_config(RaySparseConfig(), {"loss.beta": 0.25, "train.lr": 1e-4})
    assert cfg.loss.beta == 0.25 and cfg.train.lr == 1e-4
    with pytest.raises(ConfigError, match=r"loss\.beta"):
        trial_config(RaySparseConfig(), {"loss.beta": -1.0})


def test_report_files(tmp_path):
    space = load_search_space(SPACE_FILE)
    chosen = select_trial(TRIALS, 15.0)
    path = write_sweep_report(
        TRIALS, chosen, [{"trial_id": "f", "error": "worker died"}], space, 15.0, tmp_path
    )
    text = path.read_text()
    assert "| a |" in text and "**yes**" in text and "worker died" in text
    assert (tmp_path / "pareto.png").stat().st_size > 1000


def test_report_separates_trials_stopped_early(tmp_path):
    """A trial stopped by ASHA shipped no model: it is listed as such, drawn apart and never on the Pareto front,
    even when its last evaluation would dominate every finished trial."""
    space = load_search_space(SPACE_FILE)
    finished = [{**t, "status": "finished"} for t in TRIALS[:4]]
    stopped = {
        "trial_id": "s",
        "ndcg@10": 0.9,
        "flops": 1.0,
        "config": {"loss.beta": 0.2},
        "status": "stopped early",
    }
    points = [*finished, stopped]
    chosen = select_trial(finished, None)
    path = write_sweep_report(points, chosen, [], space, None, tmp_path)
    rows = {
        line.split(" | ")[0].strip("| "): line
        for line in path.read_text().splitlines()
        if line.startswith("| ")
    }
    assert "| stopped early |" in rows["s"] and "yes" not in rows["s"].split("stopped early")[1]
    assert "| finished | yes |" in rows["a"] and "| finished | yes | **yes** |" in rows["b"]
    assert "4 finished, 1 stopped early" in path.read_text()
    assert [p["trial_id"] for p in pareto_front(finished)] == ["a", "b"]
