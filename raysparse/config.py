"""One typed configuration for every stage, loaded from YAML with ``key.path=value`` overrides.

The CLI and every ``jobs/*.py`` entry point go through :func:`load_config`, so a YAML file that works for one works
for all. Unknown keys are errors (typos must not be ignored silently) and every validation error names the dotted key.

Example::

    cfg = load_config("configs/default.yaml", overrides=["train.lr=3e-4", "mining.analyzer=bigram"])
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_serializer,
    field_validator,
    model_validator,
)


class ConfigError(ValueError):
    """A configuration file or override is invalid; the message names the file and the dotted key."""


# ----------------------------------------------------------------------------------------------------------------
# Secrets: typed SecretStr (printed as ********), never dumped, and every value seen is scrubbed from error messages
# and log lines (raysparse.cli installs redact_secrets on its log handlers and on the one-line errors).
# ----------------------------------------------------------------------------------------------------------------

SECRET_KEY_WORDS = ("password", "passwd", "secret", "token", "api_key", "apikey", "credential")
REDACTED = "***"
_KNOWN_SECRETS: set[str] = set()
_URL_USERINFO = re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://[^/\s:@]+:)[^@\s/]+@")


def is_secret_key(key: str) -> bool:
    """Whether a dotted config key (or its last part) names a secret."""
    last = key.strip().rsplit(".", 1)[-1].lower()
    return any(word in last for word in SECRET_KEY_WORDS) and not last.endswith(("_env", "_file"))


def register_secret(value: str | None) -> None:
    """Remember a secret value so that :func:`redact_secrets` scrubs it wherever it shows up."""
    if value and len(value) >= 3:  # shorter values would redact ordinary words
        _KNOWN_SECRETS.add(value)


def redact_secrets(text: str) -> str:
    """``text`` with known secret values and the passwords of ``scheme://user:pass@host`` URLs replaced."""
    for value in sorted(_KNOWN_SECRETS, key=len, reverse=True):
        text = text.replace(value, REDACTED)
    return _URL_USERINFO.sub(rf"\g<1>{REDACTED}@", text)


def redact_override(override: str) -> str:
    """``key=value`` with the value hidden when the key names a secret."""
    key, sep, value = override.partition("=")
    if sep and is_secret_key(key):
        register_secret(value)
        return f"{key}={REDACTED}"
    return override


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Section):
    """Where the training/evaluation data comes from.

    ``train`` and ``dev`` are *sources*: a path plus a format understood by :mod:`raysparse.data`
    (``beir``, ``squad``, ``msmarco``, ``jsonl``, ``parquet``, ``prototype``, ``sample``). ``sample`` is the small
    Korean/English set shipped inside the package (used by the default job, offline and without ../shared).
    """

    format: Literal["sample", "beir", "squad", "msmarco", "jsonl", "parquet", "prototype"] = "sample"
    path: str | None = None
    dev_format: Literal["sample", "beir", "squad", "msmarco", "jsonl", "parquet", "prototype"] | None = None
    dev_path: str | None = None
    # field names for plain JSONL/Parquet sources
    id_field: str | None = "id"  # null (or --set data.id_field=null) = ids hashed from the text
    text_field: str = "text"
    title_field: str = "title"
    query_field: str = "query"
    date_field: str | None = None
    max_records: int | None = Field(default=None, ge=1)
    dev_fraction: float = Field(default=0.1, ge=0.0, lt=1.0)
    seed: int = 13


class MiningConfig(_Section):
    """BM25 hard-negative mining (bm25s on Ray Data)."""

    analyzer: Literal["kiwi", "bigram", "hf"] = "bigram"
    hf_tokenizer: str | None = None  # path or name of a Hugging Face tokenizer when analyzer == "hf"
    top_k: int = Field(default=100, ge=1)
    num_hard_negatives: int = Field(default=10, ge=0)
    num_random_negatives: int = Field(default=5, ge=0)
    near_duplicate_threshold: float = Field(default=0.9, gt=0.0, le=1.0)
    bm25_k1: float = 1.2
    bm25_b: float = 0.75
    backend: Literal["auto", "numba", "numpy"] = "auto"
    batch_size: int = Field(default=512, ge=1)
    num_workers: int = Field(default=0, ge=0)  # 0 = one per available CPU
    cpus_per_worker: float = Field(default=1.0, gt=0.0)
    # custom Ray resources every CPU task and actor of mining (corpus analysis included), augmentation and indexing
    # asks for, e.g. {cpu_pool: 1} to keep them on the CPU nodes of cluster.yaml
    resources: dict[str, float] = Field(default_factory=dict)
    seed: int = 13
    # Queries per output shard (triples/part-NNNNN.parquet, written by the worker that mined it). Independent of
    # batch_size, so the files do not change when batching or worker counts do.
    shard_rows: int = Field(default=8192, ge=1)
    # Inputs with fewer queries AND fewer documents than this run in-process even when Ray is requested. Measured
    # (benchmarks/results/mining.md, idle 2-core VM, 12k docs / 20k queries): in-process 3.6 s vs Ray 8.0 s, i.e.
    # >= 4.4 s of fixed Ray cost against 5.5k q/s in-process; with two actors at most ~2x faster, Ray only wins
    # beyond ~50k queries on one node. 0 = always use Ray when asked (tests of the Ray path set this).
    in_process_below: int = Field(default=50000, ge=0)
    # numba threads for the top-k kernel of the in-process miner (0 = all cores). 1 by default: on a loaded
    # machine numba's thread pool was measured 6x slower than one thread (benchmarks/results/mining.md).
    threads: int = Field(default=1, ge=0)
    # documents per corpus-analysis batch (one Ray Data task each on the Ray path)
    analysis_batch_size: int = Field(default=2048, ge=1)


class AugmentConfig(_Section):
    """Cross-lingual (Korean<->English) augmentation."""

    dictionaries: list[str] = Field(default_factory=list)  # extra dictionary files (TSV / synonym JSON)
    use_shared_glossaries: bool = False  # merge ../shared/data/bilingual glossaries when present
    max_variants_per_query: int = Field(default=3, ge=0)
    parallel_text: list[str] = Field(default_factory=list)  # sentence-pair files for the cross-lingual loss
    seed: int = 13


class ModelConfig(_Section):
    """The encoder and its backbone: the sparse encoder, or (``kind: dense``) the dense bi-encoder baseline."""

    # "sparse": the SPLADE-style encoder (raysparse.model); "dense": a pooled-vector bi-encoder over the same
    # backbone, trained by the same loop with InfoNCE (raysparse.dense). The lexical/translation/output-bias keys
    # only apply to the sparse encoder; the spec keys (lengths, windows, pretokenize) to both.
    kind: Literal["sparse", "dense"] = "sparse"
    pooling: Literal["mean", "cls"] = "mean"  # dense: mean over real tokens, or the first ([CLS]) token
    normalize: bool = True  # dense: L2-normalise vectors (inner product = cosine)
    backbone: str = "local-small"  # "local-small" builds one from data; else a HF name or local path
    vocab_size: int = Field(default=8000, ge=100)
    hidden_size: int = Field(default=128, ge=16)
    num_layers: int = Field(default=2, ge=1)
    num_heads: int = Field(default=2, ge=1)
    intermediate_size: int = Field(default=512, ge=16)
    max_query_length: int = Field(default=32, ge=4)
    max_doc_length: int = Field(default=128, ge=8)
    # Added to each position's own input-token logit: the untrained encoder starts as a bag of words.
    lexical_prior: float = Field(default=5.0, ge=0.0)
    # Korean<->English translation prior learned from the parallel text and dictionaries (raysparse.alignment):
    # each input token raises its translations' logits by translation_prior * Dice score. 0 turns it off.
    translation_prior: float = Field(default=5.0, ge=0.0)
    translation_top_k: int = Field(default=4, ge=1)
    translation_min_score: float = Field(default=0.05, gt=0.0, le=1.0)
    query_mode: Literal["encoder", "inference_free"] = "encoder"
    # How exact terms enter the vector. "logit": +lexical_prior on each token's own logit (a bag of words through
    # the transformer). "bm25": an exact BM25 weight per piece from whole-text counts, with IDF/avgdl fitted on the
    # backbone's corpus, added to the transformer's weights (raysparse.model.LexicalPrior); the untrained encoder
    # then ranks like BM25 over its pieces and translation_prior scales Dice-weighted translations of those weights.
    lexical_weighting: Literal["logit", "bm25"] = "logit"
    lexical_k1: float = Field(default=1.2, ge=0.0)
    lexical_b: float = Field(default=0.75, ge=0.0, le=1.0)
    neural_weight: float = Field(
        default=1.0, ge=0.0
    )  # scale of the transformer part next to the lexical part
    translation_side: Literal["query", "document", "both"] | None = (
        None  # null: query (document if inference-free)
    )
    # Encoding spec saved with the model (raysparse.encoding.EncodingSpec): windows, Kiwi segmentation, pruning.
    pretokenize: Literal["none", "kiwi"] = "none"
    doc_stride: int | None = Field(default=None, ge=1)  # null: 3/4 of a window
    max_windows: int = Field(default=8, ge=1)
    doc_top_k: int | None = Field(default=None, ge=1)  # keep at most this many terms per document (pruning)
    query_top_k: int | None = Field(default=None, ge=1)
    threshold: float = Field(default=0.0, ge=0.0)
    # "corpus": evaluate/index refit the BM25 IDF/avgdl on the corpus they encode (as BM25 does); "model": keep the
    # statistics fitted on the backbone's corpus (what an exported bundle encoding inside OpenSearch uses)
    lexical_statistics: Literal["model", "corpus"] = "model"
    mlm_warmup_steps: int = Field(default=0, ge=0)  # optional masked-LM warm start of a local backbone
    # Initial vocabulary-logit bias of a local backbone: negative enough that the random head's noise stays below
    # zero (inactive) and the priors dominate; its noise grows with hidden_size (-0.25 suits 128, -1.0 suits 256).
    output_bias: float = Field(default=-0.25, le=0.0)


class LossConfig(_Section):
    """total = alpha * ranking + beta * cross_lingual + gamma * sparsity (+ delta * distillation)."""

    ranking: Literal["infonce", "margin"] = "infonce"
    alpha: float = Field(default=1.0, ge=0.0)
    beta: float = Field(default=0.1, ge=0.0)
    gamma_query: float = Field(default=3e-3, ge=0.0)
    gamma_doc: float = Field(default=1e-3, ge=0.0)
    sparsity: Literal["flops", "l1"] = "flops"
    sparsity_warmup_fraction: float = Field(default=0.5, ge=0.0, le=1.0)
    delta: float = Field(default=0.0, ge=0.0)  # distillation weight (0 = off)
    distillation: Literal["margin_mse", "kl"] = "margin_mse"
    temperature: float = Field(default=1.0, gt=0.0)
    # model.kind dense: InfoNCE temperature over (cosine) inner products (raysparse.losses.dense)
    dense_temperature: float = Field(default=0.05, gt=0.0)
    margin: float = Field(default=1.0, ge=0.0)


class DeepSpeedConfig(_Section):
    enabled: bool = True
    zero_stage: int = Field(default=2, ge=0, le=3)
    # auto: bf16 on GPUs and on CPUs with native bf16 (AVX512-BF16/AMX), fp32 elsewhere (emulated bf16 is slow)
    precision: Literal["auto", "bf16", "fp16", "fp32"] = "auto"
    offload_optimizer: bool = False


class TrainConfig(_Section):
    num_workers: int = Field(default=1, ge=1)
    use_gpu: bool = False
    cpus_per_worker: float = Field(default=1.0, gt=0.0)
    batch_size: int = Field(default=16, ge=1)  # per worker
    gradient_accumulation_steps: int = Field(default=1, ge=1)
    max_steps: int = Field(default=200, ge=1)
    lr: float = Field(default=3e-4, gt=0.0)
    weight_decay: float = Field(default=0.01, ge=0.0)
    warmup_fraction: float = Field(default=0.1, ge=0.0, le=1.0)
    max_grad_norm: float = Field(default=1.0, gt=0.0)
    negatives_per_query: int = Field(default=1, ge=0)
    eval_every: int = Field(default=50, ge=1)
    checkpoint_every: int = Field(default=100, ge=1)
    # Steps between metric reports to Ray Train (validation and checkpoint steps always report). Each report is a
    # round trip through Ray's controller; every step's metrics still go to TensorBoard and history.jsonl.
    report_every: int = Field(default=10, ge=1)
    early_stopping_patience: int | None = Field(default=None, ge=1)
    eval_at_start: bool = False  # validate the untrained model too (step 0 of the learning curve)
    max_failures: int = Field(default=1, ge=0)
    keep_checkpoints: int | None = Field(default=3, ge=1)  # None keeps every checkpoint
    deepspeed: DeepSpeedConfig = Field(default_factory=DeepSpeedConfig)
    # custom Ray resources each training worker needs, e.g. {gpu_pool: 1} to place workers on GPU nodes
    resources: dict[str, float] = Field(default_factory=dict)
    seed: int = 13


class EvalConfig(_Section):
    k: int = Field(default=10, ge=1)
    recall_k: int = Field(default=100, ge=1)
    bm25_analyzer: Literal["kiwi", "bigram"] = "kiwi"
    batch_size: int = Field(default=32, ge=1)
    # queries timed one at a time (encode + search, batch 1) for latency p50/p99 in metrics.json; 0 = not timed
    latency_queries: int = Field(default=100, ge=0)


class TuneConfig(_Section):
    search_space: str = "tuning/loss_weights.yaml"
    num_samples: int = Field(default=4, ge=1)
    max_concurrent_trials: int = Field(default=1, ge=1)
    scheduler: Literal["asha", "fifo"] = "asha"
    search_alg: Literal["optuna", "random"] = "optuna"
    flops_budget: float | None = Field(default=None, gt=0.0)
    metric: str = "ndcg@10"
    # Tune retries of a crashed trial before it is reported as failed
    max_failures: int = Field(default=1, ge=0)


class ExportConfig(_Section):
    formats: list[Literal["torchscript", "onnx", "opensearch", "hf", "sentence-transformers"]] = Field(
        default_factory=lambda: ["torchscript", "onnx", "opensearch"]
    )
    opset: int = Field(default=17, ge=11)
    parity_tolerance: float = Field(default=1e-4, gt=0.0)


OPENSEARCH_PASSWORD_ENV = "RAYSPARSE_OPENSEARCH_PASSWORD"
# opensearch.* keys read from the environment when the config leaves them unset (secured clusters: the same
# variables `scripts/opensearch.sh secure-env` prints for its --secure node)
OPENSEARCH_ENV = {
    "username": "RAYSPARSE_OPENSEARCH_USERNAME",
    "password_file": "RAYSPARSE_OPENSEARCH_PASSWORD_FILE",
    "ca_certs": "RAYSPARSE_OPENSEARCH_CA_CERTS",
    "client_cert": "RAYSPARSE_OPENSEARCH_CLIENT_CERT",
    "client_key": "RAYSPARSE_OPENSEARCH_CLIENT_KEY",
}


class OpenSearchConfig(_Section):
    url: str = "http://127.0.0.1:9200"
    index: str = "raysparse"
    username: str | None = None
    # The password is a secret: prefer password_file (e.g. a mounted Kubernetes Secret) or the environment variable
    # RAYSPARSE_OPENSEARCH_PASSWORD over the command line (other users see a process's arguments). It is never
    # written back (OUT/config.yaml shows null) and is scrubbed from errors and logs.
    password: SecretStr | None = None
    password_file: str | None = None  # a file whose first line is the password (used when password is unset)
    verify_certs: bool = True
    # TLS: the cluster's CA (PEM) for https:// URLs signed by a private CA; a client certificate + key (PEM) for
    # clusters that authenticate clients by certificate. Unset keys fall back to OPENSEARCH_ENV's variables.
    ca_certs: str | None = None
    client_cert: str | None = None
    client_key: str | None = None
    aws_region: str | None = None  # set to sign requests with AWS SigV4
    bulk_batch_size: int = Field(default=500, ge=1)
    max_retries: int = Field(default=5, ge=0)

    @model_validator(mode="before")
    @classmethod
    def _password_from_file_or_env(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for key, var in OPENSEARCH_ENV.items():
            if data.get(key) is None and os.environ.get(var) and key != "password_file":
                data[key] = os.environ[var]
        if data.get("password") is not None:
            return data
        if not data.get("password_file") and not os.environ.get(OPENSEARCH_PASSWORD_ENV):
            data["password_file"] = os.environ.get(OPENSEARCH_ENV["password_file"]) or None
        if data.get("password_file"):
            path = Path(str(data["password_file"])).expanduser()
            try:
                lines = path.read_text(encoding="utf-8").splitlines()
            except (OSError, UnicodeDecodeError) as err:
                raise ValueError(f"opensearch.password_file {path}: cannot read it ({err})") from None
            return {**data, "password": lines[0] if lines else ""}
        if os.environ.get(OPENSEARCH_PASSWORD_ENV):
            return {**data, "password": os.environ[OPENSEARCH_PASSWORD_ENV]}
        return data

    @field_validator("password")
    @classmethod
    def _remember_password(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            register_secret(value.get_secret_value())
        return value

    @field_serializer("password", when_used="json")
    def _never_dump_password(self, value: SecretStr | None) -> None:
        return None  # dumped configs (OUT/config.yaml, Ray worker configs) never carry it


class CorpusConfig(_Section):
    """Corpus builders (``raysparse corpus``): Wikipedia dumps and dated corpora -> passages (raysparse.corpus)."""

    passage_max_chars: int = Field(
        default=1000, ge=50
    )  # passages are packed from paragraphs/sentences up to this
    passage_min_chars: int = Field(default=40, ge=0)  # shorter passages are dropped and counted
    cache_dir: str = (
        "cache/corpus"  # parsed dumps: <cache_dir>/<inputs sha256>-<config hash>/passages.parquet
    )
    namespaces: list[int] = Field(default_factory=lambda: [0])  # MediaWiki namespaces kept (0 = articles)
    skip_disambiguation: bool = True
    disambiguation_templates: list[str] = Field(
        default_factory=lambda: ["동음이의", "disambig", "disambiguation", "dab", "hndis", "geodis"]
    )
    # sections dropped whole (navigation and references, not prose)
    drop_sections: list[str] = Field(
        default_factory=lambda: [
            "같이 보기",
            "각주",
            "외부 링크",
            "참고 문헌",
            "참고 자료",
            "출처",
            "각주 및 참고 문헌",
            "See also",
            "References",
            "External links",
            "Further reading",
            "Notes",
            "Bibliography",
        ]
    )
    lang: str | None = None  # passage language; None = the dump's xml:lang, else detected per passage
    num_workers: int | None = Field(
        default=None, ge=1
    )  # Ray Data concurrency over shards; None = one per shard
    # custom Ray resources every parsing task asks for, e.g. {cpu_pool: 1} to keep them on cluster.yaml's CPU nodes
    # (a task asking for CPUs alone can make an autoscaler launch a GPU node); not part of the cache key
    resources: dict[str, float] = Field(default_factory=dict)


class GenerateConfig(_Section):
    """Synthetic queries from an LLM server (``raysparse generate-queries``, raysparse.generate).

    A real model server (Ollama, vLLM, llama.cpp server, ...) must be running at ``url``; see
    docs/synthetic-queries.md. Queries pass the filters in this order: Korean ratio, length, dedup, round trip.
    """

    api: Literal["ollama", "openai"] = "ollama"  # Ollama's native API or the OpenAI-compatible chat API
    url: str = "http://127.0.0.1:11434"  # server root (Ollama's default); vLLM: http://host:8000
    model: str | None = None  # required when generating
    ollama_endpoint: Literal["generate", "chat"] = "chat"  # /api/generate or /api/chat (api=ollama)
    api_key_env: str = "OPENAI_API_KEY"  # env var holding a bearer key (api=openai); unset = no header
    stream: bool = False  # streamed replies (NDJSON / SSE) instead of one JSON body
    prompt: str = "doc2query_ko_v1"  # a template shipped in raysparse/resources/prompts or a file path
    num_queries: int = Field(default=5, ge=1, le=50)
    temperature: float = Field(default=0.7, ge=0.0)
    max_tokens: int = Field(default=256, ge=1)
    seed: int | None = 13  # sent to the server (sampling seed) where it supports one
    max_doc_chars: int = Field(default=2000, ge=50)  # longer passages are cut before prompting
    concurrency: int = Field(default=4, ge=1)  # in-flight requests = Ray Data actors (threads with --no-ray)
    batch_size: int = Field(default=8, ge=1)  # documents per batch = per resumable Parquet shard
    cpus_per_worker: float = Field(default=0.25, gt=0.0)  # requests wait on the server, not on our CPU
    # custom Ray resources every generation actor asks for, e.g. {cpu_pool: 1} (as mining.resources)
    resources: dict[str, float] = Field(default_factory=dict)
    connect_timeout: float = Field(default=10.0, gt=0.0)  # seconds
    read_timeout: float = Field(default=120.0, gt=0.0)  # seconds without a byte from the server
    max_retries: int = Field(default=4, ge=0)  # after the first try, on 429/5xx/timeouts/broken replies
    backoff_base: float = Field(default=1.0, ge=0.0)  # seconds; doubles per retry, with jitter
    backoff_max: float = Field(default=30.0, ge=0.0)
    on_error: Literal["record", "raise"] = "record"  # record: count + retry on the next run; raise: stop
    max_docs: int | None = Field(default=None, ge=1)  # generate for the first N documents only
    # filters
    min_korean_ratio: float = Field(default=0.8, ge=0.0, le=1.0)  # Hangul share of the letters
    min_chars: int = Field(default=4, ge=1)
    max_chars: int = Field(default=100, ge=1)
    dedup: bool = True  # drop repeats (normalised text) within a document and across the corpus
    round_trip: Literal["bm25", "model", "none"] = "bm25"  # keep a query only if it retrieves its source
    round_trip_k: int = Field(default=10, ge=1)
    round_trip_analyzer: Literal["kiwi", "bigram"] = "bigram"
    round_trip_model: str | None = None  # a trained sparse model directory (round_trip=model)

    @model_validator(mode="after")
    def _check(self) -> GenerateConfig:
        if self.max_chars < self.min_chars:
            raise ValueError(f"generate.max_chars ({self.max_chars}) < generate.min_chars ({self.min_chars})")
        if self.round_trip == "model" and not self.round_trip_model:
            raise ValueError("generate.round_trip_model must be set when generate.round_trip is 'model'")
        return self


class TimeConfig(_Section):
    """Time-aware term weighting from dated corpora (raysparse.timeweight; docs/time-aware.md).

    Counts of each time window weigh ``2^(-|reference_date - window centre| / half_life_days)`` in the IDF.
    """

    enabled: bool = False  # master switch: the use_* / opensearch_recency switches apply only when True
    corpus: str | None = None  # dated corpus (file/dir) read by raysparse.corpus.read_dated_source
    date_field: str = "begin"  # date field of dated JSON lines (petitions: begin)
    text_field: str = "content"
    period: Literal["day", "week", "month", "year"] = "month"
    half_life_days: float | None = Field(default=90.0, gt=0.0)  # None = no decay (plain IDF)
    reference_date: str | None = None  # ISO date ages are measured from; None = newest window centre
    analyzer: Literal["kiwi", "bigram"] = "bigram"  # terms of the analyzer table (BM25/OpenSearch)
    rising_min_count: int = Field(default=5, ge=1)  # recent documents a rising term must occur in
    rising_min_z: float = Field(default=3.0, ge=0.0)  # two-proportion z-score threshold
    rising_top_k: int = Field(default=30, ge=1)
    # inference-free mode, after training: the trained model's query weights are replaced by the recency IDF of
    # the dated corpus (evaluated and exported with them)
    use_for_query_weights: bool = False
    # inference-free mode, before training: the query weights start from the recency IDF (instead of the plain IDF
    # of the training documents) and are then learned
    use_as_training_prior: bool = False
    # search time: OpenSearch function_score decay on the date field (raysparse.opensearch.recency_query)
    opensearch_recency: bool = False
    opensearch_date_field: str = "date"
    opensearch_decay: Literal["gauss", "exp", "linear"] = "exp"
    opensearch_origin: str = "now"  # "now" or an ISO date (the reference date)
    opensearch_scale: str = "30d"
    opensearch_offset: str = "0d"
    opensearch_decay_value: float = Field(default=0.5, gt=0.0, lt=1.0)  # score factor at offset + scale


class SynonymsConfig(_Section):
    """Korean-English synonym discovery from a trained encoder (``raysparse synonyms``, raysparse.synonyms)."""

    # aligned sentence-pair files (augment's readers); empty = augment.parallel_text
    parallel_text: list[str] = Field(default_factory=list)
    max_pairs_per_file: int = Field(
        default=3000, ge=1
    )  # first N pairs of each file: no file drowns the others
    min_term_count: int = Field(default=3, ge=1)  # sentence pairs a term must occur in to be a candidate
    max_terms: int = Field(default=3000, ge=1)  # most frequent terms per language
    max_term_pieces: int = Field(default=3, ge=1)  # longer terms are split too finely to be scored reliably
    korean_tags: list[str] = Field(default_factory=lambda: ["NNG", "NNP", "VV", "VA", "XR"])  # Kiwi tags
    activation_threshold: float = Field(
        default=0.5, ge=0.0
    )  # a term is active in a sentence above this weight
    min_cooccurrence: int = Field(default=2, ge=1)  # co-activation pairs seen fewer times score 0
    weights: dict[Literal["activation", "coactivation", "embedding"], float] = Field(
        default_factory=lambda: {"activation": 0.45, "coactivation": 0.45, "embedding": 0.1}
    )
    threshold: float = Field(default=0.15, ge=0.0, le=1.0)  # minimum combined score of an emitted pair
    cap_per_term: int = Field(
        default=3, ge=1
    )  # at most this many translations per Korean and per English term
    eval_k: list[int] = Field(default_factory=lambda: [1, 5, 10])
    batch_size: int = Field(default=64, ge=1)


class RayConfig(_Section):
    address: str | None = None  # None = local (or RAY_ADDRESS); "auto" = an existing cluster
    storage_path: str = "runs"  # RunConfig storage (local dir, s3://, gs://, NFS)


class RaySparseConfig(_Section):
    """The root configuration; every section has defaults that run offline on a laptop."""

    name: str = "raysparse"
    output_dir: str = "outputs/default"
    data: DataConfig = Field(default_factory=DataConfig)
    mining: MiningConfig = Field(default_factory=MiningConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    tune: TuneConfig = Field(default_factory=TuneConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)
    opensearch: OpenSearchConfig = Field(default_factory=OpenSearchConfig)
    ray: RayConfig = Field(default_factory=RayConfig)
    corpus: CorpusConfig = Field(default_factory=CorpusConfig)
    generate: GenerateConfig = Field(default_factory=GenerateConfig)
    time: TimeConfig = Field(default_factory=TimeConfig)
    synonyms: SynonymsConfig = Field(default_factory=SynonymsConfig)

    @model_validator(mode="after")
    def _check_cross_section(self) -> RaySparseConfig:
        if self.mining.analyzer == "hf" and not self.mining.hf_tokenizer:
            raise ValueError("mining.hf_tokenizer must be set when mining.analyzer is 'hf'")
        if self.data.format != "sample" and not self.data.path:
            raise ValueError(f"data.path is required when data.format is '{self.data.format}'")
        return self


def _parse_scalar(text: str) -> Any:
    """Parse an override value with YAML rules (``3e-4`` -> float, ``true`` -> bool, ``[a,b]`` -> list)."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_override(tree: dict[str, Any], override: str) -> None:
    """Apply one ``dotted.key=value`` override to a nested dict in place."""
    if "=" not in override:
        raise ConfigError(f"override {override!r} is not of the form key.path=value")
    key, _, raw = override.partition("=")
    shown = redact_override(override)
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise ConfigError(f"override {shown!r} has an empty key")
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {shown!r}: '{part}' is a value, not a section")
        node = child
    # a secret stays a string: YAML would turn a password like 1234 or yes into a number or a boolean
    node[parts[-1]] = raw if is_secret_key(key) else _parse_scalar(raw)


def _format_validation_error(err: ValidationError, source: str) -> str:
    lines = [f"invalid configuration ({source}):"]
    for item in err.errors():
        key = ".".join(str(p) for p in item["loc"]) or "<root>"
        shown = ""
        if "input" in item:
            secret = any(is_secret_key(str(p)) for p in item["loc"])
            shown = f" (got {REDACTED})" if secret else f" (got {item['input']!r})"
        lines.append(f"  {key}: {item['msg']}{shown}")
    return redact_secrets("\n".join(lines))


def config_from_dict(tree: dict[str, Any], source: str = "<dict>") -> RaySparseConfig:
    try:
        return RaySparseConfig.model_validate(tree)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err, source)) from None


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RaySparseConfig:
    """Load a YAML config (or the defaults when ``path`` is None) and apply ``key=value`` overrides."""
    tree: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        source = str(path)
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        try:
            loaded = yaml.safe_load(p.read_text(encoding="utf-8"))
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f" line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            problem = getattr(err, "problem", None) or str(err).splitlines()[0]
            raise ConfigError(f"{p}{where}: not valid YAML: {problem}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(
                f"{p}: the top level must be a mapping of sections, got {type(loaded).__name__}"
            )
        tree = loaded
    for override in overrides or []:
        apply_override(tree, override)
    if overrides:
        source += " + overrides " + " ".join(redact_override(o) for o in overrides)
    return config_from_dict(tree, source)


def dump_config(cfg: RaySparseConfig, path: str | Path) -> None:
    """Write the fully resolved configuration (every default spelled out) next to a run's outputs."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    header = "# secrets (opensearch.password) are never written here; give them by password_file or the environment\n"
    text = header + yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
    partial = target.with_name(f".{target.name}.partial")
    partial.write_text(text, encoding="utf-8")
    partial.replace(target)
