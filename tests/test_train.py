"""Training: data loading, sampling, collation, DeepSpeed config, single-process DeepSpeed/DDP runs on real text.

The helpers at the top build small real-data inputs from ../shared/data (a tiny backbone, TRIPLES rows, a dev set);
tests/test_train_ray.py imports them by name (pytest puts tests/ on sys.path).
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from raysparse.schemas import TRIPLES, RetrievalData


def msmarco_pairs(shared_data: Path, lang: str, limit: int) -> list[tuple[str, str]]:
    """(query, first positive) from the MS MARCO ko/en dev1000 files, in id order."""
    rows = json.loads((shared_data / "msmarco-ko-en" / f"msmarco_{lang}.dev1000.json").read_text("utf-8"))
    return [(r["query"], r["positive"][0]) for r in rows[:limit] if r.get("positive")]


def char_overlap(a: str, b: str) -> float:
    """A cheap lexical score standing in for BM25 (teacher scores only need to be real numbers per document)."""
    sa, sb = set(a.split()), set(b.split())
    return float(len(sa & sb))


def triples_table(pairs: list[tuple[str, str]], num_negatives: int = 3) -> pa.Table:
    """One TRIPLES row per query; negatives are the positives of the next rows (real, unrelated passages)."""
    n = len(pairs)
    rows = []
    for i, (query, positive) in enumerate(pairs):
        negs = [pairs[(i + j) % n][1] for j in range(1, num_negatives + 1)]
        rows.append(
            {
                "query_id": f"q{i}",
                "query": query,
                "positive_ids": [f"d{i}"],
                "positive_texts": [positive],
                "positive_scores": [char_overlap(query, positive)],
                "negative_ids": [f"d{(i + j) % n}" for j in range(1, num_negatives + 1)],
                "negative_texts": negs,
                "negative_scores": [char_overlap(query, t) for t in negs],
                "negative_ranks": list(range(1, num_negatives + 1)),
                "negative_kinds": ["hard"] * num_negatives,
            }
        )
    return pa.Table.from_pylist(rows, schema=TRIPLES)


def dev_collection(pairs: list[tuple[str, str]]) -> RetrievalData:
    corpus = pa.table(
        {
            "doc_id": [f"d{i}" for i in range(len(pairs))],
            "title": [None] * len(pairs),
            "text": [p for _, p in pairs],
            "date": pa.array([None] * len(pairs), pa.timestamp("s")),
            "lang": [None] * len(pairs),
        }
    )
    queries = pa.table(
        {
            "query_id": [f"q{i}" for i in range(len(pairs))],
            "text": [q for q, _ in pairs],
            "lang": [None] * len(pairs),
        }
    )
    qrels = pa.table(
        {
            "query_id": [f"q{i}" for i in range(len(pairs))],
            "doc_id": [f"d{i}" for i in range(len(pairs))],
            "score": pa.array([1] * len(pairs), pa.int32()),
        }
    )
    return RetrievalData(corpus, queries, qrels)


def tatoeba_pairs(shared_data: Path, limit: int) -> pa.Table:
    ko, en = [], []
    for line in (shared_data / "bilingual" / "tatoeba" / "kor.txt").read_text("utf-8").splitlines()[:limit]:
        parts = line.split("\t")
        if len(parts) >= 2:
            en.append(parts[0])
            ko.append(parts[1])
    return pa.table({"ko": ko, "en": en, "source": ["tatoeba"] * len(ko)})


def build_inputs(shared_data: Path, root: Path) -> dict[str, object]:
    """Everything a tiny training run needs, written under ``root`` (built once per test session)."""
    from raysparse.backbone import build_local_backbone
    from raysparse.config import ModelConfig

    ko = msmarco_pairs(shared_data, "kor", 300)
    en = msmarco_pairs(shared_data, "eng", 300)
    train_pairs = ko[:120] + en[:120]
    dev_pairs = ko[250:280]
    sentences = tatoeba_pairs(shared_data, 3000)
    texts = (
        [t for pair in ko + en for t in pair]
        + sentences.column("ko").to_pylist()
        + sentences.column("en").to_pylist()
    )
    model_cfg = ModelConfig(
        vocab_size=2000,
        hidden_size=32,
        num_layers=1,
        num_heads=2,
        intermediate_size=64,
        max_query_length=16,
        max_doc_length=48,
    )
    backbone = build_local_backbone(texts, model_cfg, root / "backbone")
    triples_dir = root / "triples"
    triples_dir.mkdir(parents=True, exist_ok=True)
    pq.write_table(triples_table(train_pairs), triples_dir / "part-0.parquet")
    pq.write_table(sentences, root / "sentence_pairs.parquet")
    return {
        "backbone": backbone,
        "triples": str(triples_dir),
        "sentence_pairs": str(root / "sentence_pairs.parquet"),
        "dev": dev_collection(dev_pairs),
        "model_overrides": [
            "model.vocab_size=2000",
            "model.hidden_size=32",
            "model.num_layers=1",
            "model.num_heads=2",
            "model.intermediate_size=64",
            "model.max_query_length=16",
            "model.max_doc_length=48",
        ],
    }


# ------------------------------------------------------------------------------------------------------------------
# Tests
# ------------------------------------------------------------------------------------------------------------------


_INPUTS_CACHE: dict[str, dict[str, object]] = {}


def session_inputs(shared_data: Path, tmp_path_factory) -> dict[str, object]:
    """Build the inputs once per pytest session (test_train.py and test_train_ray.py share them)."""
    key = str(tmp_path_factory.getbasetemp())
    if key not in _INPUTS_CACHE:
        _INPUTS_CACHE[key] = build_inputs(shared_data, tmp_path_factory.mktemp("train_inputs"))
    return _INPUTS_CACHE[key]


@pytest.fixture(scope="session")
def train_inputs(shared_data, tmp_path_factory) -> dict[str, object]:
    return session_inputs(shared_data, tmp_path_factory)


def _cfg(inputs: dict[str, object], *overrides: str):
    from raysparse.config import load_config

    return load_config(None, [*inputs["model_overrides"], "model.lexical_prior=5", *overrides])


def test_deepspeed_config_per_stage():
    from raysparse.config import TrainConfig
    from raysparse.training import deepspeed_config

    for stage in range(4):
        tc = TrainConfig(
            batch_size=4,
            gradient_accumulation_steps=3,
            max_grad_norm=0.5,
            deepspeed={"zero_stage": stage, "precision": "bf16"},
        )
        ds = deepspeed_config(tc)
        assert ds["zero_optimization"]["stage"] == stage
        assert ds["train_micro_batch_size_per_gpu"] == 4
        assert ds["gradient_accumulation_steps"] == 3
        assert ds["gradient_clipping"] == 0.5
        assert ds["bf16"]["enabled"] and not ds["fp16"]["enabled"]
        assert ds["zero_allow_untested_optimizer"] is True
        assert "train_batch_size" not in ds  # derived by DeepSpeed from the world size inside the workers
        assert ("stage3_gather_16bit_weights_on_model_save" in ds["zero_optimization"]) == (stage == 3)
    fp32 = deepspeed_config(TrainConfig(deepspeed={"precision": "fp32"}))
    assert not fp32["bf16"]["enabled"] and not fp32["fp16"]["enabled"]
    offload = deepspeed_config(TrainConfig(deepspeed={"zero_stage": 2, "offload_optimizer": True}))
    assert offload["zero_optimization"]["offload_optimizer"]["device"] == "cpu"
    with pytest.raises(ValueError, match="offload_optimizer needs"):
        deepspeed_config(TrainConfig(deepspeed={"zero_stage": 0, "offload_optimizer": True}))
    gpu_fp16 = deepspeed_config(TrainConfig(use_gpu=True, deepspeed={"precision": "fp16"}))
    assert gpu_fp16["fp16"]["enabled"]


def test_fp16_on_cpu_is_a_clear_error(train_inputs, tmp_path):
    from raysparse.config import TrainConfig
    from raysparse.training import deepspeed_config, train_single_process

    with pytest.raises(ValueError, match=r"fp16 needs a GPU"):
        deepspeed_config(TrainConfig(deepspeed={"precision": "fp16"}))
    # the entry points fail before building anything
    cfg = _cfg(train_inputs, "train.deepspeed.precision=fp16")
    with pytest.raises(ValueError, match=r"fp16 needs a GPU"):
        train_single_process(
            cfg, train_inputs["triples"], None, tmp_path, backbone_dir=train_inputs["backbone"]
        )
    assert not (tmp_path / "checkpoints").exists()


def test_lr_schedule_warms_up_then_decays_to_zero():
    from raysparse.training import lr_lambda

    f = lr_lambda(100, 0.1)
    assert f(0) == pytest.approx(0.1)
    assert f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0)
    assert f(55) == pytest.approx(0.5)
    assert f(100) == 0.0
    assert lr_lambda(10, 0.0)(0) == 1.0


def test_sampling_is_a_function_of_the_step_and_shards_ranks():
    from raysparse.training import sample_rows

    n, batch, world = 10, 3, 2
    # 10 micro-steps x 2 ranks x 3 rows = 60 positions = 6 full epochs: each epoch a permutation of all rows
    stream = []
    for m in range(10):
        for r in range(world):
            stream += sample_rows(n, batch, seed=5, micro_step=m, rank=r, world_size=world)
    for epoch in range(6):
        rows = [row for row, e in stream[epoch * n : (epoch + 1) * n]]
        assert sorted(rows) == list(range(n))
        assert all(e == epoch for _, e in stream[epoch * n : (epoch + 1) * n])
    # resuming at micro-step 7 gives exactly what an uninterrupted run sees at step 7
    assert (
        sample_rows(n, batch, seed=5, micro_step=7, rank=1, world_size=world)
        == stream[(7 * world + 1) * batch :][:batch]
    )
    assert sample_rows(n, batch, seed=6, micro_step=0) != sample_rows(n, batch, seed=5, micro_step=0)


def test_load_triples_reports_skips_and_names_bad_rows(shared_data, tmp_path):
    import pyarrow.parquet as pq

    from raysparse.training import load_triples

    pairs = msmarco_pairs(shared_data, "kor", 6)
    table = triples_table(pairs, num_negatives=2)
    rows = table.to_pylist()
    rows[1]["positive_texts"], rows[1]["positive_ids"], rows[1]["positive_scores"] = [], [], []
    rows[2]["query"] = "  "
    rows[3]["negative_texts"], rows[3]["negative_ids"], rows[3]["negative_scores"] = [], [], []
    rows[3]["negative_ranks"], rows[3]["negative_kinds"] = [], []
    path = tmp_path / "t.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=TRIPLES), path)
    ex = load_triples(path, negatives_per_query=1)
    assert len(ex) == 3 and ex.report.read == 3
    assert ex.report.skipped == {"no positive": 1, "empty query": 1, "no negative": 1}
    assert len(load_triples(path, negatives_per_query=0)) == 4  # no negatives needed: row 3 trains

    rows[4]["negative_scores"] = [1.0]  # two texts, one score
    pq.write_table(pa.Table.from_pylist(rows, schema=TRIPLES), path)
    with pytest.raises(ValueError, match=r"t\.parquet: row 4, field negative_scores"):
        load_triples(path)
    pq.write_table(pa.table({"query": ["x"]}), path)
    with pytest.raises(ValueError, match=r"missing field\(s\) positive_texts"):
        load_triples(path)


def test_collator_pads_dynamically_and_carries_teacher_scores(train_inputs):
    from raysparse.model import SparseEncoder
    from raysparse.training import Collator, load_pairs, load_triples, sample_rows

    ex = load_triples(train_inputs["triples"], 2)
    tok = SparseEncoder.from_pretrained(train_inputs["backbone"]).tokenizer
    col = Collator(tok, max_query_length=16, max_doc_length=48, negatives_per_query=2, seed=1)
    rows = sample_rows(len(ex), 4, seed=1, micro_step=3)
    batch = col.examples(ex, rows)
    q, d = batch["q"], batch["d"]
    assert q.num_texts == q.input_ids.shape[0] == 4 and d.num_texts == 4 + 4 * 2
    assert q.input_ids.shape[1] <= 16 and d.input_ids.shape[1] <= 48
    # long documents become several windows, each owned by its text; every text has at least one
    assert d.input_ids.shape[0] >= d.num_texts and set(d.text_index.tolist()) == set(range(d.num_texts))
    # dynamic padding: the longest row in the batch has no padding
    assert q.attention_mask.sum(1).max() == q.input_ids.shape[1]
    assert batch["teacher_neg"].shape == (4, 2)
    # teacher scores are those of the chosen documents, and the choice is reproducible
    row0 = rows[0][0]
    assert batch["teacher_pos"][0].item() == ex.positive_scores[row0][0]
    assert all(s in ex.negative_scores[row0] for s in batch["teacher_neg"][0].tolist())
    again = col.examples(ex, rows)
    assert (again["d"].input_ids == batch["d"].input_ids).all()
    sentences, report = load_pairs(train_inputs["sentence_pairs"], "sentence pairs")
    assert report.read == len(sentences) > 100
    pairs = col.pairs([("검색", "search")], sentences, 6, micro_step=0, rank=0)
    assert pairs["ko"].num_texts == pairs["en"].num_texts == 6


@pytest.mark.slow
@pytest.mark.parametrize(("stage", "delta"), [(2, 0.0), (3, 0.1)])
def test_single_process_deepspeed_bf16_trains_and_consolidates(train_inputs, tmp_path, stage, delta):
    import torch
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    from raysparse.model import SparseEncoder
    from raysparse.training import DS_TAG, train_single_process

    cfg = _cfg(
        train_inputs,
        f"train.deepspeed.zero_stage={stage}",
        "train.deepspeed.precision=bf16",
        "train.max_steps=3",
        "train.batch_size=4",
        "train.negatives_per_query=1",
        "train.checkpoint_every=3",
        "train.eval_every=3",
        f"loss.delta={delta}",  # ZeRO-3 run also distils from the BM25 teacher scores carried by the collator
    )
    result = train_single_process(
        cfg,
        train_inputs["triples"],
        train_inputs["dev"],
        tmp_path,
        sentence_pairs=train_inputs["sentence_pairs"],
        backbone_dir=train_inputs["backbone"],
    )
    assert [h["step"] for h in result.history] == [1, 2, 3]
    # ZeRO-3 must not leave DeepSpeed's process-wide F.linear replacement behind (it breaks later tracing/export)
    assert torch.nn.functional.linear.__module__.startswith("torch")
    for h in result.history:
        assert torch.isfinite(torch.tensor(h["loss/total"]))
        assert h["loss/cross_lingual"] > 0  # the sentence pairs reached the loss
        assert (h["loss/distillation"] > 0) == (delta > 0)
    assert 0.0 <= result.best_metrics["val/ndcg@10"] <= 1.0
    assert (tmp_path / "tensorboard").is_dir() and any((tmp_path / "tensorboard").iterdir())

    trained = SparseEncoder.from_pretrained(result.model_dir)
    initial = SparseEncoder.from_pretrained(train_inputs["backbone"])
    assert trained.lexical_prior == 5.0  # the training-time encoder settings travel with the model
    fp32 = get_fp32_state_dict_from_zero_checkpoint(result.checkpoint_path, tag=DS_TAG)
    trained_sd, initial_sd = trained.state_dict(), initial.state_dict()
    changed = 0
    for key, value in fp32.items():
        name = key.removeprefix("encoder.")
        assert trained_sd[name].dtype == torch.float32
        torch.testing.assert_close(trained_sd[name], value.float(), rtol=0, atol=0)
        changed += not torch.equal(trained_sd[name], initial_sd[name])
    assert changed > len(fp32) // 2, f"only {changed}/{len(fp32)} parameters changed"
    reps = trained.encode_documents(["검색 엔진 search engine"])
    assert torch.isfinite(reps).all() and (reps > 0).any()


@pytest.mark.slow
def test_single_process_ddp_fallback_resumes_from_its_checkpoint(train_inputs, tmp_path):
    import json

    import torch

    from raysparse.model import SparseEncoder
    from raysparse.training import train_single_process

    common = [
        "train.deepspeed.enabled=false",
        "train.deepspeed.precision=bf16",
        "train.batch_size=4",
        "train.negatives_per_query=1",
        "train.checkpoint_every=2",
        "loss.beta=0",
    ]
    first = train_single_process(
        _cfg(train_inputs, *common, "train.max_steps=2"),
        train_inputs["triples"],
        None,
        tmp_path,
        backbone_dir=train_inputs["backbone"],
    )
    assert (Path(first.checkpoint_path) / "torch_state.pt").is_file()
    second = train_single_process(
        _cfg(train_inputs, *common, "train.max_steps=4"),
        train_inputs["triples"],
        None,
        tmp_path,
        backbone_dir=train_inputs["backbone"],
    )
    # resumed: only steps 3 and 4 ran in the second call, and the step counter continued
    assert [h["step"] for h in second.history] == [3, 4]
    steps = [
        json.loads(line)["step"] for line in (tmp_path / "progress" / "rank0.jsonl").read_text().splitlines()
    ]
    assert steps == [1, 2, 3, 4]
    model = SparseEncoder.from_pretrained(second.model_dir)
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_inference_free_query_mode_starts_from_idf_weights(train_inputs):
    import torch

    from raysparse.training import load_triples
    from raysparse.training.loop import _build_model

    cfg = _cfg(train_inputs, "model.query_mode=inference_free")
    examples = load_triples(train_inputs["triples"], 1)
    encoder = _build_model(cfg, train_inputs["backbone"], examples)
    assert encoder.query_mode == "inference_free" and encoder.query_weights is not None
    batch = encoder.tokenize(["서울 날씨"], 16)
    reps = encoder.query_forward(batch["input_ids"], batch["attention_mask"])
    active = set(torch.nonzero(reps[0]).flatten().tolist())
    # only the query's own (non-special) tokens get weight, each its IDF
    assert active and active <= set(batch["input_ids"][0].tolist())
    for token in active:
        assert float(reps[0, token]) == pytest.approx(float(encoder.query_weights[token]))


def test_cli_reports_bad_input_in_one_line(train_inputs, tmp_path, capsys):
    from raysparse.cli import main

    missing = tmp_path / "nope.parquet"
    assert main(["train", "--triples", str(missing), "--out", str(tmp_path / "o"), "--single-process"]) == 2
    assert f"{missing} does not exist" in capsys.readouterr().err
    args = ["train", "--triples", train_inputs["triples"], "--out", str(tmp_path / "o"), "--single-process"]
    assert main([*args, "--set", "train.deepspeed.precision=fp16"]) == 2
    assert "fp16 needs a GPU" in capsys.readouterr().err
    assert main([*args, "--set", "train.no_such_key=1"]) == 2
    assert "train.no_such_key" in capsys.readouterr().err


def test_precision_auto_picks_bf16_only_where_it_is_native():
    from raysparse.config import TrainConfig
    from raysparse.training import cpu_has_native_bf16, deepspeed_config, resolve_precision

    assert resolve_precision("auto", on_gpu=True) == "bf16"
    assert resolve_precision("auto", on_gpu=False) == ("bf16" if cpu_has_native_bf16() else "fp32")
    assert resolve_precision("bf16", on_gpu=False) == "bf16"  # an explicit choice is kept
    cfg = TrainConfig(deepspeed={"precision": "auto"})
    assert deepspeed_config(cfg, on_gpu=True)["bf16"]["enabled"] is True
