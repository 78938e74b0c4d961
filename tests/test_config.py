"""The typed configuration: defaults run, YAML + overrides compose, errors name the key."""

from __future__ import annotations

import pytest

from raysparse.config import ConfigError, RaySparseConfig, apply_override, dump_config, load_config


def test_defaults_validate():
    cfg = load_config()
    assert isinstance(cfg, RaySparseConfig)
    assert (
        cfg.mining.top_k == 100
        and cfg.mining.num_hard_negatives == 10
        and cfg.mining.num_random_negatives == 5
    )
    assert cfg.data.format == "sample"


def test_yaml_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("mining:\n  analyzer: kiwi\n  top_k: 50\ntrain:\n  lr: 1.0e-3\n")
    cfg = load_config(
        path, ["mining.top_k=20", "train.deepspeed.zero_stage=3", "augment.dictionaries=[a.tsv, b.json]"]
    )
    assert cfg.mining.analyzer == "kiwi"
    assert cfg.mining.top_k == 20
    assert cfg.train.lr == pytest.approx(1e-3)
    assert cfg.train.deepspeed.zero_stage == 3
    assert cfg.augment.dictionaries == ["a.tsv", "b.json"]


def test_unknown_key_is_named(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("mining:\n  topk: 50\n")
    with pytest.raises(ConfigError, match=r"mining\.topk"):
        load_config(path)


def test_bad_value_is_named():
    with pytest.raises(ConfigError, match=r"train\.deepspeed\.zero_stage"):
        load_config(None, ["train.deepspeed.zero_stage=7"])
    with pytest.raises(ConfigError, match=r"mining\.analyzer"):
        load_config(None, ["mining.analyzer=whitespace"])


def test_cross_section_rules():
    with pytest.raises(ConfigError, match="hf_tokenizer"):
        load_config(None, ["mining.analyzer=hf"])
    with pytest.raises(ConfigError, match=r"data\.path"):
        load_config(None, ["data.format=beir"])


def test_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("mining: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(listy)


def test_override_syntax():
    tree: dict = {"mining": 3}
    with pytest.raises(ConfigError, match=r"key\.path=value"):
        apply_override(tree, "mining.top_k")
    with pytest.raises(ConfigError, match="is a value"):
        apply_override(tree, "mining.top_k=3")


def test_dump_round_trip(tmp_path):
    cfg = load_config(None, ["train.max_steps=7", "mining.analyzer=kiwi"])
    dump_config(cfg, tmp_path / "resolved.yaml")
    again = load_config(tmp_path / "resolved.yaml")
    assert again == cfg


def test_shipped_configs_validate():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    for path in sorted((root / "configs").glob("*.yaml")):
        load_config(path)
