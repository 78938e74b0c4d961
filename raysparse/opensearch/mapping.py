"""Index mapping (rank_features + BM25 field, ``_meta``) and term sanitising for ``rank_features``."""

from __future__ import annotations

import hashlib
import json
import math
import zlib
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from raysparse.opensearch.client import OpenSearchError

TermWeights = dict[str, float]
#: texts -> one {token: weight} dict per text (what SparseEncoder.encode returns).
TermEncoder = Callable[[Sequence[str]], list[TermWeights]]

SPARSE_FIELD = "sparse"
BM25_FIELD = "bm25"
DOT_REPLACEMENT = "\u2024"  # ONE DOT LEADER: looks like ".", is not a path separator
MAX_WEIGHT = 64.0
BM25_MODES = ("whitespace", "nori", "standard")


# --------------------------------------------------------------------------------------------- mapping
def index_mapping(
    with_date: bool = False,
    bm25_mode: str = "whitespace",
    shards: int = 1,
    replicas: int = 0,
    encoder: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Settings + mappings for a raysparse index.

    ``encoder`` (from :func:`encoder_identity`) is recorded in ``_meta.raysparse.encoder`` so that indexing or
    searching with another encoder can be refused (:func:`check_encoder`).

    ``bm25_mode``: ``whitespace`` (default) stores raysparse's own pre-analysed tokens (char bigrams or Kiwi
    morphemes from :mod:`raysparse.analyzers`, space-joined) under a whitespace analyzer, so OpenSearch's BM25
    sees exactly the tokens raysparse's BM25 baseline sees; ``nori`` analyses raw text with the analysis-nori
    plugin (users' clusters; not on Maven Central for 2.19.1); ``standard`` is OpenSearch's default analyzer.
    """
    if bm25_mode not in BM25_MODES:
        raise ValueError(f"bm25_mode must be one of {BM25_MODES}, got {bm25_mode!r}")
    analyzer = {"whitespace": "whitespace", "nori": "nori", "standard": "standard"}[bm25_mode]
    properties: dict[str, Any] = {
        "doc_id": {"type": "keyword"},
        "title": {"type": "text"},
        "text": {"type": "text"},
        "lang": {"type": "keyword"},
        SPARSE_FIELD: {"type": "rank_features"},
        BM25_FIELD: {"type": "text", "analyzer": analyzer, "similarity": "BM25"},
    }
    if with_date:
        properties["date"] = {"type": "date", "format": "strict_date_optional_time||epoch_second"}
    meta: dict[str, Any] = {"bm25_mode": bm25_mode, "dot_replacement": DOT_REPLACEMENT}
    if encoder is not None:
        meta["encoder"] = dict(encoder)
    return {
        "settings": {"index": {"number_of_shards": shards, "number_of_replicas": replicas}},
        "mappings": {
            "dynamic": "strict",  # a typo'd field is an error per document, not a silent new field
            "_meta": {"raysparse": meta},
            "properties": properties,
        },
    }


def create_index(client, index: str, mapping: Mapping[str, Any], recreate: bool = False) -> bool:
    """Create ``index`` (drop it first when ``recreate``); returns False when it already existed and was kept."""
    if client.indices.exists(index=index):
        if not recreate:
            return False
        client.indices.delete(index=index)
    client.indices.create(index=index, body=dict(mapping))
    return True


def index_meta(client, index: str) -> dict[str, Any]:
    """The ``_meta.raysparse`` block written by :func:`index_mapping` (empty for foreign indices)."""
    mapping = client.indices.get_mapping(index=index)
    body = next(iter(mapping.values()))["mappings"]
    return dict(body.get("_meta", {}).get("raysparse", {}))


# --------------------------------------------------------------------------------------------- terms
@dataclass
class SanitizeReport:
    """What :func:`sanitize_terms` changed; counts are per term occurrence."""

    kept: int = 0
    renamed: int = 0  # "." mapped to DOT_REPLACEMENT
    clipped: int = 0  # weight > MAX_WEIGHT set to MAX_WEIGHT
    dropped: dict[str, int] = field(default_factory=dict)  # reason -> count
    merged: int = 0  # two raw tokens that map to one feature name (max weight kept)

    def drop(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1

    def merge(self, other: SanitizeReport) -> None:
        self.kept += other.kept
        self.renamed += other.renamed
        self.clipped += other.clipped
        self.merged += other.merged
        for reason, n in other.dropped.items():
            self.dropped[reason] = self.dropped.get(reason, 0) + n

    def as_dict(self) -> dict[str, Any]:
        return {
            "kept": self.kept,
            "renamed": self.renamed,
            "clipped": self.clipped,
            "merged": self.merged,
            "dropped": dict(self.dropped),
        }


def feature_name(token: str) -> str:
    """The ``rank_features`` key for ``token``: "." -> U+2024 (documents and queries must both use this)."""
    return token.replace(".", DOT_REPLACEMENT)


def sanitize_terms(
    term_weights: Mapping[str, float], max_weight: float = MAX_WEIGHT
) -> tuple[TermWeights, SanitizeReport]:
    """Make ``{token: weight}`` storable and queryable as ``rank_features`` (see the module docstring)."""
    report = SanitizeReport()
    clean: TermWeights = {}
    for token, raw in term_weights.items():
        if not isinstance(token, str) or not token.strip():
            report.drop("empty token")
            continue
        try:
            weight = float(raw)
        except (TypeError, ValueError):
            report.drop("non-numeric weight")
            continue
        if math.isnan(weight):
            report.drop("NaN weight")
            continue
        if weight <= 0.0:
            report.drop("non-positive weight")
            continue
        if weight > max_weight:
            weight = max_weight
            report.clipped += 1
        name = feature_name(token)
        if name != token:
            report.renamed += 1
        if name in clean:
            report.merged += 1
            clean[name] = max(clean[name], weight)
            continue
        # Lucene stores features as positive *normal* floats; sub-normal values are rejected too.
        if weight < 1.1754944e-38:
            report.drop("weight below the smallest normal float")
            continue
        clean[name] = weight
        report.kept += 1
    return clean, report


def lexical_term_weights(texts: Sequence[str], analyzer: str = "bigram") -> list[TermWeights]:
    """A deterministic, model-free term encoder over raysparse analyzer tokens: weight = (1 + ln tf) * g(token).

    ``g`` is a fixed pseudo-random factor in [1, 2) from CRC32, so rankings depend on both term frequency and
    token identity (a dot product over these vectors is not just BM25). Used by tests and benchmarks where no
    trained :class:`raysparse.model.SparseEncoder` is available; same interface as ``SparseEncoder.encode``.
    """
    from raysparse.analyzers import get_analyzer

    out: list[TermWeights] = []
    for tokens in get_analyzer(analyzer)(list(texts)):
        counts = Counter(tokens)
        out.append(
            {
                t: round((1.0 + math.log(n)) * (1.0 + (zlib.crc32(t.encode()) % 1000) / 1000.0), 4)
                for t, n in counts.items()
            }
        )
    return out


def dot_product(query: Mapping[str, float], doc: Mapping[str, float]) -> float:
    """In-process sparse score (what OpenSearch's linear rank_feature sum approximates)."""
    if len(query) > len(doc):
        query, doc = doc, query
    return sum(w * doc[t] for t, w in query.items() if t in doc)


# --------------------------------------------------------------------------------------------- encoder record
class EncoderMismatch(OpenSearchError):
    """The index was built with another encoder than the one asked for (``--force`` overrides)."""


#: keys of an encoder record that only the document side fixes (a query encoder cannot know them)
DOCUMENT_ONLY_KEYS = ("doc_top_k", "max_doc_length")


def model_sha256(model_dir: str | Path) -> str:
    """sha256 over the names and bytes of every file directly in ``model_dir`` (weights, tokenizer, raysparse.json).

    Any change to the weights, the vocabulary or the saved encoding settings changes the hash.
    """
    digest = hashlib.sha256()
    files = sorted(p for p in Path(model_dir).iterdir() if p.is_file() and not p.name.startswith("."))
    if not files:
        raise FileNotFoundError(f"{model_dir}: no model files")
    for path in files:
        digest.update(path.name.encode() + b"\0")
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def encoder_identity(
    model_dir: str | Path | None = None,
    *,
    lexical_analyzer: str | None = None,
    max_doc_length: int | None = None,
    max_query_length: int | None = None,
    doc_top_k: int | None = None,
) -> dict[str, Any]:
    """What produced an index's sparse vectors: model hash, encoding settings, query mode (or the lexical encoder).

    The model's own saved settings (``raysparse.json``: query mode, encoding spec) are covered by the hash; the
    lengths and top-k given here are the ones this run encodes with.
    """
    if (model_dir is None) == (lexical_analyzer is None):
        raise ValueError("give exactly one of model_dir or lexical_analyzer")
    if lexical_analyzer is not None:
        return {"kind": "lexical", "analyzer": lexical_analyzer}
    meta_path = Path(model_dir) / "raysparse.json"
    meta = json.loads(meta_path.read_text(encoding="utf-8")) if meta_path.is_file() else {}
    record: dict[str, Any] = {
        "kind": "model",
        "model_sha256": model_sha256(model_dir),
        "query_mode": meta.get("query_mode", "encoder"),
        "max_query_length": max_query_length,
        "max_doc_length": max_doc_length,
        "doc_top_k": doc_top_k,
    }
    return record


def encoder_differences(
    stored: Mapping[str, Any], wanted: Mapping[str, Any], for_search: bool = False
) -> list[str]:
    """``key: stored -> wanted`` for every field that differs (document-only fields skipped for searches)."""
    diffs = []
    for key in sorted(set(stored) | set(wanted)):
        if for_search and key in DOCUMENT_ONLY_KEYS:
            continue
        if stored.get(key) != wanted.get(key):
            diffs.append(f"{key}: {stored.get(key)!r} -> {wanted.get(key)!r}")
    return diffs


def check_encoder(
    client, index: str, wanted: Mapping[str, Any], *, for_search: bool = False, force: bool = False
) -> list[str]:
    """Refuse (``EncoderMismatch``) to index into / search ``index`` with an encoder other than the recorded one.

    Indexing into an index without a record: recorded now when the index is empty; refused when it already holds
    documents (their encoder is unknown). ``force`` lets either through and returns the differences it overrode;
    a forced indexing run records the new encoder, keeping the old one under ``replaced_encoder``.
    """
    meta = index_meta(client, index)
    stored = meta.get("encoder")
    if stored is None:
        if for_search:
            return []  # an index from elsewhere: nothing to compare against
        count = int(client.count(index=index)["count"])
        if count and not force:
            raise EncoderMismatch(
                f"index {index!r} holds {count} documents but records no encoder; "
                "re-create it (--recreate) or pass --force to add documents anyway"
            )
        _put_meta(client, index, {**meta, "encoder": dict(wanted)})
        return [f"encoder: unrecorded -> {dict(wanted)!r}"] if count else []
    diffs = encoder_differences(stored, wanted, for_search)
    if diffs and not force:
        verb = "search" if for_search else "index into"
        raise EncoderMismatch(
            f"refusing to {verb} {index!r} with another encoder than it was built with "
            f"({'; '.join(diffs)}); pass --force to do it anyway"
        )
    if diffs and not for_search:
        _put_meta(client, index, {**meta, "encoder": dict(wanted), "replaced_encoder": dict(stored)})
    return diffs


def _put_meta(client, index: str, raysparse_meta: Mapping[str, Any]) -> None:
    client.indices.put_mapping(index=index, body={"_meta": {"raysparse": dict(raysparse_meta)}})
