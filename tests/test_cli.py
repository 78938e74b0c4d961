"""The command line: every stage is a subcommand with its own --help; shared argument helpers."""

from __future__ import annotations

from pathlib import Path

import pytest

from raysparse.cli import backbone_from_args, build_parser, main

COMMANDS = [
    "run",
    "corpus",
    "generate-queries",
    "mine",
    "augment",
    "train",
    "evaluate",
    "tune",
    "export",
    "encode",
    "index",
    "search",
    "deploy",
    "demo",
    "time-weights",
    "synonyms",
]


def test_every_stage_is_a_subcommand_with_help(capsys):
    parser = build_parser()
    subcommands = next(a for a in parser._actions if a.dest == "command").choices
    assert set(COMMANDS) <= set(subcommands)
    for command in COMMANDS:
        with pytest.raises(SystemExit) as exit_info:
            main([command, "--help"])
        assert exit_info.value.code == 0
        assert "usage: raysparse " + command in capsys.readouterr().out


def test_one_job_per_verb_and_each_job_runs_its_own_verb():
    """jobs/X.py is the `raysparse X` verb (jobs/pipeline.py is `run`): none missing, none running another verb."""
    import ast
    import subprocess
    import sys

    from tests.conftest import REPO_ROOT

    def verb_of(job: Path) -> list[str]:
        call = next(
            n
            for n in ast.walk(ast.parse(job.read_text(encoding="utf-8")))
            if isinstance(n, ast.Call) and getattr(n.func, "id", None) == "main"
        )
        return [e.value for e in call.args[0].elts if isinstance(e, ast.Constant)]

    jobs = {p.stem: verb_of(p) for p in (REPO_ROOT / "jobs").glob("*.py") if not p.stem.startswith("_")}
    subcommands = next(a for a in build_parser()._actions if a.dest == "command").choices
    expected = {("pipeline" if verb == "run" else verb.replace("-", "_")): [verb] for verb in subcommands}
    expected["synonym_loop"] = ["synonyms", "loop"]
    assert jobs == expected
    # jobs/train.py trains (the `train` verb's options), it is not a second copy of the pipeline
    out = subprocess.run(
        [sys.executable, "jobs/train.py", "--help"], capture_output=True, text=True, cwd=REPO_ROOT, check=True
    ).stdout
    assert "usage: raysparse train" in out and "--triples" in out


def test_no_command_prints_help(capsys):
    assert main([]) == 2
    assert "Pipeline, one subcommand per stage" in capsys.readouterr().out


def test_bad_config_is_one_line_naming_the_key(capsys):
    assert main(["run", "--set", "train.max_steps=0"]) == 2
    assert "train.max_steps" in capsys.readouterr().err


def test_backbone_argument():
    assert backbone_from_args("local-small") == (["model.backbone=local-small"], None)
    assert backbone_from_args("/models/klue-bert") == ([], "/models/klue-bert")
    assert backbone_from_args(None) == ([], None)


def test_data_source_arguments():
    import argparse

    from raysparse.cli import data_source_overrides
    from raysparse.config import ConfigError

    beir = argparse.Namespace(beir="sets/klue", data_format=None, data_path=None)
    assert data_source_overrides(beir) == ["data.format=beir", "data.path=sets/klue"]
    squad = argparse.Namespace(beir=None, data_format="squad", data_path="v.jsonl")
    assert data_source_overrides(squad) == ["data.format=squad", "data.path=v.jsonl"]
    with pytest.raises(ConfigError, match="not both"):
        data_source_overrides(argparse.Namespace(beir="a", data_format="squad", data_path=None))
