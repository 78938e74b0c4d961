"""What the demo page shows for one query, as plain data: three hit lists, the query's terms, highlights.

:class:`DemoSearcher` is importable without the HTTP server (tests and notebooks call :meth:`DemoSearcher.query`
directly); :mod:`raysparse.demo.server` only turns its result into JSON.

- BM25 and sparse lists come from OpenSearch (:func:`raysparse.opensearch.search_run`, the same queries
  ``raysparse search`` sends); the hybrid list is :func:`raysparse.fusion.fuse_min_max` of those two lists, the one
  fusion function the benchmark and ``raysparse search --mode hybrid`` use.
- The query's terms are the model's query vector (what the sparse query sends), each labelled ``query`` (a piece of
  the query text itself), ``expansion`` (a new term in the query's own script) or ``translation`` (a Korean<->English
  expansion: a term in the other script than the query's pieces, or a target of a query piece in the model's
  translation table).
- A hit's matched terms: for sparse and hybrid, the query terms the document's stored vector holds (query weight x
  document weight, the terms of its score); for BM25, the query's analysed tokens found in the document's BM25 field.
  Highlights are where a matched term's surface form (``##`` and the dot replacement undone) occurs in the text.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from raysparse.analyzers import is_hangul
from raysparse.fusion import DEFAULT_BM25_WEIGHT, fuse_min_max

#: characters of a hit's text shown around its first highlight
SNIPPET_CHARS = 360
_LATIN = re.compile(r"[A-Za-z]")


def script_of(token: str) -> str:
    """``hangul``, ``latin`` or ``other`` (digits, punctuation) for one term."""
    if is_hangul(token):
        return "hangul"
    if _LATIN.search(token):
        return "latin"
    return "other"


def surface(token: str) -> str:
    """How a vocabulary term appears in text: WordPiece's ``##`` and raysparse's dot replacement undone."""
    from raysparse.opensearch import DOT_REPLACEMENT

    return token.removeprefix("##").removeprefix("\u2581").replace(DOT_REPLACEMENT, ".")


def highlight_spans(text: str, terms: Sequence[str]) -> list[tuple[int, int, str]]:
    """Non-overlapping ``(start, end, term)`` spans where the terms' surface forms occur (case-insensitive).

    Longer surfaces win where two overlap. Single-character continuation pieces (``##s``) are not highlighted: they
    would mark letters all over the text without telling the reader anything.
    """
    forms = []
    for term in terms:
        form = surface(term)
        if not form.strip() or (term.startswith("##") and len(form) < 2):
            continue
        forms.append((form, term))
    taken = [False] * len(text)
    spans: list[tuple[int, int, str]] = []
    for form, term in sorted(forms, key=lambda ft: -len(ft[0])):
        for m in re.finditer(re.escape(form), text, flags=re.IGNORECASE):
            if any(taken[m.start() : m.end()]):
                continue
            taken[m.start() : m.end()] = [True] * (m.end() - m.start())
            spans.append((m.start(), m.end(), term))
    return sorted(spans)


def snippet(
    text: str, spans: Sequence[tuple[int, int, str]], width: int = SNIPPET_CHARS
) -> list[dict[str, Any]]:
    """The text around its first highlight as segments ``{"text", "term"}`` (``term`` None for plain text).

    At most ``width`` characters; ``…`` marks where the text was cut.
    """
    start = 0
    if spans and len(text) > width:
        start = max(0, min(spans[0][0] - width // 5, len(text) - width))
    end = min(len(text), start + width)
    segments: list[dict[str, Any]] = []
    if start > 0:
        segments.append({"text": "…", "term": None})
    pos = start
    for s, e, term in spans:
        if s < start or e > end:
            continue
        if s > pos:
            segments.append({"text": text[pos:s], "term": None})
        segments.append({"text": text[s:e], "term": term})
        pos = e
    if pos < end:
        segments.append({"text": text[pos:end], "term": None})
    if end < len(text):
        segments.append({"text": "…", "term": None})
    return segments


@dataclass
class DemoSearcher:
    """One index and one model: :meth:`query` answers the page's search box.

    ``bm25_analyzer`` must be the analyser the index's BM25 field was built with (``raysparse index
    --bm25-analyzer``, bigram by default); ``bm25_weight`` is the hybrid's weight on the min-max normalised BM25 list.
    """

    client: Any
    index: str
    model: Any  # raysparse.model.SparseEncoder
    size: int = 10
    bm25_analyzer: str = "bigram"
    bm25_weight: float = DEFAULT_BM25_WEIGHT

    @classmethod
    def open(cls, client, index: str, model_dir: str, force: bool = False, **kwargs: Any) -> DemoSearcher:
        """Load the model and check the index exists and was built with it (``force`` searches anyway)."""
        from raysparse.model import SparseEncoder
        from raysparse.opensearch import OpenSearchError, check_encoder, encoder_identity

        if not client.indices.exists(index=index):
            raise OpenSearchError(f"no index {index!r} (build it with `raysparse index`)")
        check_encoder(client, index, encoder_identity(model_dir), for_search=True, force=force)
        model = SparseEncoder.from_pretrained(model_dir)
        model.eval()
        return cls(client, index, model, **kwargs)

    # ------------------------------------------------------------------ query side
    def query_pieces(self, text: str) -> list[str]:
        """The query's own word pieces, as the model tokenises it (after its pre-tokenisation)."""
        from raysparse.encoding import pretokenize

        return list(self.model.tokenizer.tokenize(pretokenize([text], self.model.spec.pretokenize)[0]))

    def translation_sources(self, pieces: Sequence[str]) -> dict[str, list[str]]:
        """target term -> the query pieces whose translation-table rows hold it (empty without a table)."""
        ids = getattr(self.model, "translation_ids", None)
        if ids is None or self.model.translation_prior == 0.0:
            return {}
        tok = self.model.tokenizer
        weights = self.model.translation_weights
        sources: dict[str, list[str]] = {}
        for piece in dict.fromkeys(pieces):
            pid = tok.convert_tokens_to_ids(piece)
            if pid is None or pid >= ids.shape[0]:
                continue
            for target, w in zip(ids[pid].tolist(), weights[pid].tolist(), strict=True):
                if w > 0:
                    sources.setdefault(tok.convert_ids_to_tokens(int(target)), []).append(piece)
        return sources

    def query_terms(self, text: str) -> tuple[dict[str, float], list[dict[str, Any]]]:
        """The sparse query vector (sanitised, as sent) and one row per term for the page, strongest first."""
        from raysparse.opensearch import sanitize_terms

        weights, _ = sanitize_terms(self.model.encode([text], is_query=True)[0])
        pieces = self.query_pieces(text)
        own = set(pieces)
        scripts = {script_of(p) for p in pieces} - {"other"}
        table = self.translation_sources(pieces)
        rows = []
        for token, weight in sorted(weights.items(), key=lambda kv: (-kv[1], kv[0])):
            script = script_of(surface(token))
            if token in own:
                kind = "query"
            elif token in table or (script != "other" and scripts and script not in scripts):
                kind = "translation"
            else:
                kind = "expansion"
            row: dict[str, Any] = {"term": token, "weight": round(weight, 4), "kind": kind, "script": script}
            if kind == "translation":
                row["direction"] = "ko→en" if script == "latin" else "en→ko" if script == "hangul" else ""
                row["from"] = table.get(token, [])
            rows.append(row)
        return weights, rows

    # ------------------------------------------------------------------ search
    def query(self, text: str) -> dict[str, Any]:
        """Everything the page shows for ``text`` (JSON-ready)."""
        from raysparse.analyzers import get_analyzer
        from raysparse.opensearch import BM25_FIELD, SPARSE_FIELD, search_run

        text = text.strip()
        if not text:
            raise ValueError("the query is empty")
        weights, term_rows = self.query_terms(text)
        bm25 = search_run(
            self.client,
            self.index,
            {"q": text},
            mode="bm25",
            size=self.size,
            bm25_analyzer=self.bm25_analyzer,
        )["q"]
        sparse = (
            search_run(
                self.client, self.index, {"q": text}, lambda _: [weights], mode="sparse", size=self.size
            )["q"]
            if weights
            else {}
        )
        hybrid = fuse_min_max(bm25, sparse, self.bm25_weight)
        lists = {"bm25": bm25, "sparse": sparse, "hybrid": hybrid}
        ranked = {
            name: sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))[: self.size]
            for name, scores in lists.items()
        }
        ids = list(dict.fromkeys(d for hits in ranked.values() for d, _ in hits))
        docs = {}
        if ids:
            for doc in self.client.mget(index=self.index, body={"ids": ids})["docs"]:
                docs[doc["_id"]] = doc.get("_source", {})
        bm25_tokens = set(get_analyzer(self.bm25_analyzer)([text])[0])
        kinds = {row["term"]: row["kind"] for row in term_rows}

        def hit(name: str, rank: int, doc_id: str, score: float) -> dict[str, Any]:
            src = docs.get(doc_id, {})
            title, body = src.get("title") or "", src.get("text") or ""
            matched: list[dict[str, Any]] = []
            if name in ("sparse", "hybrid"):
                stored = src.get(SPARSE_FIELD) or {}
                for t, qw in weights.items():
                    if t in stored:
                        matched.append(
                            {
                                "term": t,
                                "query_weight": round(qw, 4),
                                "doc_weight": round(float(stored[t]), 4),
                                "kind": kinds.get(t, "query"),
                            }
                        )
                matched.sort(key=lambda m: -m["query_weight"] * m["doc_weight"])
            if name in ("bm25", "hybrid"):
                field_tokens = set((src.get(BM25_FIELD) or "").split())
                seen = {m["term"] for m in matched}
                matched += [
                    {"term": t, "kind": "bm25"} for t in sorted(bm25_tokens & field_tokens) if t not in seen
                ]
            terms = [m["term"] for m in matched]
            return {
                "rank": rank,
                "doc_id": doc_id,
                "score": round(score, 4),
                "title": title,
                "title_segments": snippet(title, highlight_spans(title, terms), width=len(title) or 1),
                "segments": snippet(body, highlight_spans(body, terms)),
                "matched": matched,
            }

        return {
            "query": text,
            "index": self.index,
            "bm25_weight": self.bm25_weight,
            "query_mode": self.model.query_mode,
            "terms": term_rows,
            "results": {
                name: [hit(name, r, d, s) for r, (d, s) in enumerate(hits, start=1)]
                for name, hits in ranked.items()
            },
        }


def describe_terms(rows: Sequence[Mapping[str, Any]]) -> str:
    """One line of the query's terms for logs: ``term weight`` with translations marked ``*``."""
    return " ".join(f"{r['term']}{'*' if r['kind'] == 'translation' else ''} {r['weight']:.2f}" for r in rows)
