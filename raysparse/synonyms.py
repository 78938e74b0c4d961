"""Korean-English synonym (translation pair) discovery from a trained sparse encoder.

Three signals, each a dense ``(n_ko_terms, n_en_terms)`` score matrix in [0, 1] over *word-level* term lists
(Kiwi content morphemes on the Korean side, alphabetic words on the English side; word pieces are too noisy to be
dictionary entries):

- :func:`activation_pairs` — which English terms a Korean term activates when encoded alone, and vice versa. A term
  "activates" another when every word piece of the other term gets weight; the strength is the weakest of those
  pieces relative to the source's strongest output (its own token under the lexical prior). Mean of both directions.
- :func:`coactivation_pairs` — over aligned sentence pairs, a Korean term is *active* on the Korean side when the
  encoder gives all its pieces at least ``activation_threshold``, an English term likewise on the English side;
  the Dice coefficient ``2 c(k, e) / (c(k) + c(e))`` of the two activity sets (Smadja et al., 1996) rewards terms
  that fire *together* and punishes ones that fire everywhere.
- :func:`embedding_neighbours` — cosine of the terms' output-embedding vectors (mean of the MLM decoder rows of their
  pieces), clipped at 0. On a briefly trained small backbone this is close to noise; it is kept (and measured) because
  on a pretrained multilingual backbone it is the classic bilingual-lexicon-induction signal.

:func:`combine` takes a weighted sum, keeps pairs above a threshold and at most ``cap_per_term`` translations per
Korean *and* per English term; :func:`write_dictionary` writes them as a JSON list of ``{korean, english, score,
signals, source}`` records, one per line — a format both ``BilingualDictionary.add_file`` (augmentation) and
``raysparse.data.read_synonym_json`` read, which ignore the extra fields, so scores and provenance travel with the
file. :func:`precision_at_k` scores candidates against a held-aside glossary.

Everything here is plain Python/NumPy/torch on lists; nothing needs Ray.
"""

from __future__ import annotations

import json
import logging
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from raysparse.analyzers import is_hangul

log = logging.getLogger(__name__)

SIGNALS = ("activation", "coactivation", "embedding")

# English function words: never dictionary entries, and frequent enough to co-occur with everything.
_EN_STOPWORDS_TEXT = """
    a about above after again against all also am an and any are as at be because been before being below between
    both but by can could did do does doing down during each few for from further had has have having he her here hers
    herself him himself his how i if in into is it its itself just me more most my myself no nor not now of off on once
    only or other our ours ourselves out over own same she should so some such than that the their theirs them
    themselves then there these they this those through to too under until up very was we were what when where which
    while who whom why will with would you your yours yourself yourselves s t don isn aren wasn weren won didn doesn
    let ll re ve d m o y"""
EN_STOPWORDS = frozenset(_EN_STOPWORDS_TEXT.split())
_EN_WORD = re.compile(r"[a-z][a-z\-]*[a-z]|[a-z]")
# Particles Kiwi sometimes tags as nouns after code, numbers or Latin words (`None`을 -> 을/NNG): never terms.
KO_STOPWORDS = frozenset(
    (
        "을",
        "를",
        "이",
        "가",
        "은",
        "는",
        "의",
        "에",
        "와",
        "과",
        "도",
        "로",
        "으로",
        "만",
        "에서",
        "께",
        "한테",
        "처럼",
    )
)
# Kiwi tags of dictionary-worthy Korean terms: common/proper nouns, verb and adjective stems (as X다), roots.
DEFAULT_KOREAN_TAGS = ("NNG", "NNP", "VV", "VA", "XR")


@dataclass
class TermList:
    """Terms of one language with their corpus counts and word-piece ids in the encoder's tokenizer."""

    terms: list[str]
    counts: list[int]
    pieces: list[list[int]]

    def __len__(self) -> int:
        return len(self.terms)

    def piece_matrix(self) -> tuple[np.ndarray, np.ndarray]:
        """``(ids, mask)``, both ``(n_terms, max_pieces)``: padded piece ids and which slots are real."""
        width = max((len(p) for p in self.pieces), default=1)
        ids = np.zeros((len(self.pieces), width), dtype=np.int64)
        mask = np.zeros((len(self.pieces), width), dtype=bool)
        for i, p in enumerate(self.pieces):
            ids[i, : len(p)] = p
            mask[i, : len(p)] = True
        return ids, mask


@dataclass
class Candidate:
    """One discovered Korean-English pair with its combined score and the score of each signal."""

    korean: str
    english: str
    score: float
    signals: dict[str, float] = field(default_factory=dict)

    def to_record(self, source: str) -> dict[str, Any]:
        return {
            "korean": self.korean,
            "english": self.english,
            "score": round(self.score, 4),
            "signals": {k: round(v, 4) for k, v in self.signals.items()},
            "source": source,
        }


# ------------------------------------------------------------------------------------------------ term lists
def english_words(text: str) -> list[str]:
    """Lower-cased alphabetic words of an English text, function words removed."""
    text = unicodedata.normalize("NFKC", text).lower()
    return [w for w in _EN_WORD.findall(text) if w not in EN_STOPWORDS and len(w) >= 2]


def korean_terms(texts: Sequence[str], tags: Sequence[str] = DEFAULT_KOREAN_TAGS) -> list[list[str]]:
    """Kiwi content morphemes of each Korean text with the given tags (verb/adjective stems as X다), Hangul only."""
    from raysparse.analyzers import get_kiwi, kiwi_token_form

    wanted = set(tags)
    texts = list(texts)
    if not texts:
        return []
    results = get_kiwi(-1).tokenize(texts) if len(texts) > 1 else [get_kiwi().tokenize(texts[0])]
    out = []
    for tokens in results:
        terms = [kiwi_token_form(t.form, t.tag) for t in tokens if t.tag in wanted]
        out.append([t for t in terms if is_hangul(t) and t not in KO_STOPWORDS])
    return out


def build_term_list(
    docs: Iterable[Sequence[str]], tokenizer: Any, *, min_count: int, max_terms: int, max_pieces: int
) -> TermList:
    """The ``max_terms`` most frequent terms (document frequency >= ``min_count``, at most ``max_pieces`` pieces).

    Ties in frequency are broken by the term itself so the list is deterministic.
    """
    df: Counter[str] = Counter()
    for terms in docs:
        df.update(set(terms))
    ranked = sorted((t for t, c in df.items() if c >= min_count), key=lambda t: (-df[t], t))
    terms, counts, pieces = [], [], []
    for term in ranked:
        ids = tokenizer(term, add_special_tokens=False)["input_ids"]
        if not ids or len(ids) > max_pieces:
            continue
        terms.append(term)
        counts.append(df[term])
        pieces.append(list(ids))
        if len(terms) >= max_terms:
            break
    return TermList(terms, counts, pieces)


def term_lists_from_pairs(
    sentence_pairs: Sequence[tuple[str, str]],
    tokenizer: Any,
    *,
    min_count: int = 3,
    max_terms: int = 3000,
    max_pieces: int = 3,
    korean_tags: Sequence[str] = DEFAULT_KOREAN_TAGS,
) -> tuple[TermList, TermList]:
    """Korean and English term lists from the two sides of aligned sentence pairs."""
    ko_docs = korean_terms([k for k, _ in sentence_pairs], korean_tags)
    en_docs = [english_words(e) for _, e in sentence_pairs]
    kw = {"min_count": min_count, "max_terms": max_terms, "max_pieces": max_pieces}
    return build_term_list(ko_docs, tokenizer, **kw), build_term_list(en_docs, tokenizer, **kw)


# ------------------------------------------------------------------------------------------------ signals
def _term_strength(reps: torch.Tensor, terms: TermList, chunk: int = 256) -> torch.Tensor:
    """``(N, n_terms)``: for each row of ``reps`` (N, V), the weakest weight among each term's pieces."""
    ids, mask = terms.piece_matrix()
    ids_t, pad = torch.from_numpy(ids), ~torch.from_numpy(mask)
    out = []
    for start in range(0, reps.shape[0], chunk):
        gathered = reps[start : start + chunk][:, ids_t]  # (n, T, P)
        # Padding slots must never be the minimum.
        out.append(gathered.masked_fill(pad.unsqueeze(0), float("inf")).min(dim=2).values)
    return torch.cat(out) if out else torch.zeros(0, len(terms))


def _encode(model: Any, texts: Sequence[str], max_length: int, batch_size: int) -> torch.Tensor:
    return model.encode_documents(list(texts), max_length=max_length, batch_size=batch_size)


def activation_pairs(
    model: Any, ko_terms: TermList, en_terms: TermList, *, batch_size: int = 64
) -> np.ndarray:
    """``(n_ko, n_en)`` activation scores: mean of ko->en and en->ko relative activation (see module docstring)."""
    scores = []
    for src, tgt in ((ko_terms, en_terms), (en_terms, ko_terms)):
        reps = _encode(model, src.terms, 16, batch_size)
        reps = reps / reps.max(dim=1, keepdim=True).values.clamp_min(1e-6)
        scores.append(_term_strength(reps, tgt).clamp(0.0, 1.0).numpy())
    return ((scores[0] + scores[1].T) / 2.0).astype(np.float32)


def coactivation_pairs(
    model: Any,
    sentence_pairs: Sequence[tuple[str, str]],
    ko_terms: TermList,
    en_terms: TermList,
    *,
    activation_threshold: float = 0.5,
    min_count: int = 2,
    max_length: int = 64,
    batch_size: int = 64,
) -> np.ndarray:
    """``(n_ko, n_en)`` Dice scores of term activity over aligned sentence pairs; 0 below ``min_count`` pairs."""
    if not sentence_pairs:
        return np.zeros((len(ko_terms), len(en_terms)), dtype=np.float32)
    active = []
    for side, terms in ((0, ko_terms), (1, en_terms)):
        texts = [pair[side] for pair in sentence_pairs]
        reps = _encode(model, texts, max_length, batch_size)
        active.append((_term_strength(reps, terms) >= activation_threshold).float())
    ko_act, en_act = active
    co = (ko_act.T @ en_act).numpy()  # (n_ko, n_en): c(k, e)
    c_ko = ko_act.sum(0).numpy()[:, None]
    c_en = en_act.sum(0).numpy()[None, :]
    dice = np.where(co >= min_count, 2.0 * co / np.maximum(c_ko + c_en, 1.0), 0.0)
    return dice.astype(np.float32)


def embedding_neighbours(model: Any, ko_terms: TermList, en_terms: TermList) -> np.ndarray:
    """``(n_ko, n_en)`` cosine (clipped at 0) of mean output-embedding rows of each term's pieces."""
    weight = model.mlm.get_output_embeddings().weight.detach().float().cpu()

    def vectors(terms: TermList) -> torch.Tensor:
        ids, mask = terms.piece_matrix()
        rows = weight[torch.from_numpy(ids)] * torch.from_numpy(mask).float().unsqueeze(-1)
        vec = rows.sum(1) / torch.from_numpy(mask).float().sum(1, keepdim=True).clamp_min(1.0)
        return torch.nn.functional.normalize(vec, dim=1)

    return (vectors(ko_terms) @ vectors(en_terms).T).clamp_min(0.0).numpy().astype(np.float32)


# ------------------------------------------------------------------------------------------------ combination
def combine(
    signals: Mapping[str, np.ndarray],
    ko_terms: TermList,
    en_terms: TermList,
    *,
    weights: Mapping[str, float],
    threshold: float = 0.2,
    cap_per_term: int = 3,
) -> list[Candidate]:
    """Weighted sum of the signals; pairs >= ``threshold``, at most ``cap_per_term`` per Korean and per English term.

    Weights are normalised to sum to 1 over the signals given, so the combined score stays in [0, 1]. Output is
    sorted by Korean term (corpus order) then score descending, ties by English term.
    """
    names = [n for n in signals if weights.get(n, 0.0) > 0]
    if not names:
        raise ValueError(
            f"combine: no signal with a positive weight among {sorted(signals)} (weights {weights})"
        )
    total = sum(weights[n] for n in names)
    combined = sum((weights[n] / total) * signals[n] for n in names)
    assert isinstance(combined, np.ndarray)
    rows, cols = np.nonzero(combined >= threshold)
    # Score desc, then Korean/English index asc: deterministic.
    order = np.lexsort((cols, rows, -combined[rows, cols]))
    per_ko: Counter[int] = Counter()
    per_en: Counter[int] = Counter()
    kept: list[tuple[int, int]] = []
    for i in order:
        r, c = int(rows[i]), int(cols[i])
        if per_ko[r] >= cap_per_term or per_en[c] >= cap_per_term:
            continue
        per_ko[r] += 1
        per_en[c] += 1
        kept.append((r, c))
    kept.sort(key=lambda rc: (rc[0], -combined[rc], rc[1]))
    return [
        Candidate(
            ko_terms.terms[r],
            en_terms.terms[c],
            float(combined[r, c]),
            {n: float(signals[n][r, c]) for n in signals},
        )
        for r, c in kept
    ]


def ranked_by_signal(
    matrix: np.ndarray, ko_terms: TermList, en_terms: TermList, top_n: int = 10
) -> list[Candidate]:
    """The ``top_n`` English terms of each Korean term by one score matrix (scores > 0 only), for evaluation."""
    out: list[Candidate] = []
    for r in range(matrix.shape[0]):
        row = matrix[r]
        top = np.lexsort((np.arange(row.size), -row))[:top_n]
        out.extend(Candidate(ko_terms.terms[r], en_terms.terms[c], float(row[c])) for c in top if row[c] > 0)
    return out


# ------------------------------------------------------------------------------------------------ files
def write_dictionary(
    candidates: Sequence[Candidate], path: str | Path, source: str = "raysparse.synonyms"
) -> Path:
    """Write candidates as a JSON list of ``{korean, english, score, signals, source}`` records, one per line.

    ``BilingualDictionary.add_file`` (augmentation) and ``raysparse.data.read_synonym_json`` both read it and
    ignore the score/signals fields, which stay in the file as provenance.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(c.to_record(source), ensure_ascii=False) for c in candidates]
    path.write_text("[\n" + ",\n".join(lines) + ("\n" if lines else "") + "]\n", encoding="utf-8")
    return path


def read_candidates(path: str | Path) -> list[Candidate]:
    """Read a file written by :func:`write_dictionary`; errors name the file, record and field."""
    from raysparse.data.errors import DataFormatError

    path = Path(path)
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DataFormatError(f"{path}:{err.lineno}:{err.colno}: invalid JSON: {err.msg}") from None
    if not isinstance(records, list):
        raise DataFormatError(f"{path}: expected a JSON list of {{korean, english, score}} records")
    out = []
    for i, rec in enumerate(records):
        if not isinstance(rec, dict):
            raise DataFormatError(f"{path}: record {i}: expected an object")
        for name in ("korean", "english"):
            if not isinstance(rec.get(name), str):
                raise DataFormatError(f"{path}: record {i}: field {name!r} missing or not a string")
        score = rec.get("score", 1.0)
        if not isinstance(score, int | float):
            raise DataFormatError(f"{path}: record {i}: field 'score' must be a number")
        out.append(Candidate(rec["korean"], rec["english"], float(score), dict(rec.get("signals") or {})))
    return out


# ------------------------------------------------------------------------------------------------ evaluation
def precision_at_k(candidates: Iterable[Candidate], glossary: Any, k: int) -> dict[str, float]:
    """Precision@k of candidates against a glossary (a ``BilingualDictionary`` or ``{ko: {en, ...}}``).

    Only Korean terms that have candidates AND glossary entries are evaluated (``evaluated``). Two numbers:

    - ``precision``: the bilingual-lexicon-induction convention (Conneau et al., 2018) — the fraction of evaluated
      Korean terms with at least one correct English term among their ``k`` best candidates;
    - ``pair_precision``: correct pairs / all pairs among those top-k lists (strict: every wrong extra counts).

    Candidates of one Korean term are ranked by score (desc), ties by English term; comparison is on lower-cased
    NFKC text (the glossary side as normalised by ``BilingualDictionary``).
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    by_ko: dict[str, list[Candidate]] = {}
    for c in candidates:
        by_ko.setdefault(c.korean, []).append(c)
    evaluated = hits = pairs = correct = 0
    for ko, cands in by_ko.items():
        gold = _gold_senses(glossary, ko)
        if not gold:
            continue
        top = sorted(cands, key=lambda c: (-c.score, c.english))[:k]
        found = [_norm_en(c.english) in gold for c in top]
        evaluated += 1
        hits += any(found)
        pairs += len(found)
        correct += sum(found)
    return {
        "k": k,
        "evaluated": evaluated,
        "precision": hits / evaluated if evaluated else 0.0,
        "pair_precision": correct / pairs if pairs else 0.0,
    }


def _norm_en(text: str) -> str:
    return unicodedata.normalize("NFKC", text).strip().lower()


def _gold_senses(glossary: Any, ko: str) -> set[str]:
    if hasattr(glossary, "lookup_ko"):
        return {_norm_en(e) for e in glossary.lookup_ko(ko)}
    return {_norm_en(e) for e in glossary.get(ko, ())}


def glossary_korean_terms(glossary: Any) -> set[str]:
    """Korean terms of a glossary (``BilingualDictionary`` or mapping), for coverage numbers."""
    if hasattr(glossary, "to_table"):
        return set(glossary.to_table().column("ko").to_pylist())
    return set(glossary)


# ------------------------------------------------------------------------------------------------ orchestration
@dataclass
class DiscoveryResult:
    """Candidates (thresholded, capped), top-10 lists per signal and combined (for evaluation), and counts."""

    candidates: list[Candidate]
    ranked: dict[str, list[Candidate]]
    ko_terms: TermList
    en_terms: TermList
    info: dict[str, Any] = field(default_factory=dict)


def load_sentence_pairs(
    paths: Sequence[str | Path], max_pairs_per_file: int | None = None
) -> tuple[list[tuple[str, str]], list[Any]]:
    """Aligned ``(ko, en)`` pairs from each file (augmentation's readers), the first ``max_pairs_per_file`` each.

    Returns the pairs and one ``ReadReport`` per file; pairs over the cap are counted in the report, not dropped
    silently.
    """
    from raysparse.augment import read_sentence_pairs

    pairs: list[tuple[str, str]] = []
    reports = []
    for path in paths:
        table, report = read_sentence_pairs(path)
        rows = list(zip(table.column("ko").to_pylist(), table.column("en").to_pylist(), strict=True))
        if max_pairs_per_file is not None and len(rows) > max_pairs_per_file:
            report.skip("over synonyms.max_pairs_per_file", len(rows) - max_pairs_per_file)
            rows = rows[:max_pairs_per_file]
        pairs.extend(rows)
        reports.append(report)
    return pairs, reports


def discover(model: Any, sentence_pairs: Sequence[tuple[str, str]], cfg: Any) -> DiscoveryResult:
    """All three signals over the term lists of ``sentence_pairs``, combined under ``cfg`` (``SynonymsConfig``)."""
    import time

    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    ko_terms, en_terms = term_lists_from_pairs(
        sentence_pairs,
        model.tokenizer,
        min_count=cfg.min_term_count,
        max_terms=cfg.max_terms,
        max_pieces=cfg.max_term_pieces,
        korean_tags=cfg.korean_tags,
    )
    log.info("synonyms: %d Korean and %d English terms", len(ko_terms), len(en_terms))
    if not len(ko_terms) or not len(en_terms):
        raise ValueError(
            f"no candidate terms ({len(ko_terms)} Korean, {len(en_terms)} English) in {len(sentence_pairs)} "
            f"sentence pairs with synonyms.min_term_count={cfg.min_term_count}"
        )
    signals: dict[str, np.ndarray] = {}
    seconds: dict[str, float] = {"terms": time.perf_counter() - t0}
    steps = {
        "activation": lambda: activation_pairs(model, ko_terms, en_terms, batch_size=cfg.batch_size),
        "coactivation": lambda: coactivation_pairs(
            model,
            sentence_pairs,
            ko_terms,
            en_terms,
            activation_threshold=cfg.activation_threshold,
            min_count=cfg.min_cooccurrence,
            batch_size=cfg.batch_size,
        ),
        "embedding": lambda: embedding_neighbours(model, ko_terms, en_terms),
    }
    for name in tqdm(SIGNALS, desc="signals"):
        t = time.perf_counter()
        signals[name] = steps[name]()
        seconds[name] = time.perf_counter() - t
    candidates = combine(
        signals,
        ko_terms,
        en_terms,
        weights=cfg.weights,
        threshold=cfg.threshold,
        cap_per_term=cfg.cap_per_term,
    )
    top_n = max(cfg.eval_k)
    ranked = {name: ranked_by_signal(m, ko_terms, en_terms, top_n) for name, m in signals.items()}
    total = sum(cfg.weights.get(n, 0.0) for n in signals) or 1.0
    combined = sum((cfg.weights.get(n, 0.0) / total) * m for n, m in signals.items())
    ranked["combined"] = ranked_by_signal(np.asarray(combined), ko_terms, en_terms, top_n)
    info = {
        "sentence_pairs": len(sentence_pairs),
        "korean_terms": len(ko_terms),
        "english_terms": len(en_terms),
        "candidates": len(candidates),
        "korean_terms_with_candidates": len({c.korean for c in candidates}),
        "seconds": {k: round(v, 2) for k, v in seconds.items()},
    }
    return DiscoveryResult(candidates, ranked, ko_terms, en_terms, info)


def evaluate_ranked(
    ranked: Mapping[str, Sequence[Candidate]], glossary: Any, ks: Sequence[int]
) -> dict[str, dict[str, dict[str, float]]]:
    """``{signal: {"p@k": precision_at_k(...)}}`` for every ranked list and k."""
    return {
        name: {f"p@{k}": precision_at_k(cands, glossary, k) for k in ks} for name, cands in ranked.items()
    }


def precision_table(results: Mapping[str, Mapping[str, Mapping[str, float]]], ks: Sequence[int]) -> str:
    """A Markdown table: one row per signal, precision@k (BLI) and pair precision@k columns, terms evaluated."""
    head = [f"P@{k}" for k in ks] + [f"pair P@{k}" for k in ks]
    lines = ["| signal | " + " | ".join(head) + " | Korean terms evaluated |", "|---" * (len(head) + 2) + "|"]
    for name, per_k in results.items():
        vals = [per_k[f"p@{k}"]["precision"] for k in ks] + [per_k[f"p@{k}"]["pair_precision"] for k in ks]
        evaluated = per_k[f"p@{ks[0]}"]["evaluated"]
        lines.append(f"| {name} | " + " | ".join(f"{v:.3f}" for v in vals) + f" | {evaluated} |")
    return "\n".join(lines)


def run_discovery(
    model_dir: str | Path,
    cfg: Any,
    out_dir: str | Path,
    glossaries: Sequence[str | Path] = (),
) -> dict[str, Any]:
    """Discover pairs with the encoder in ``model_dir``; write the dictionary, ranked lists and a report.

    ``cfg`` is the root ``RaySparseConfig`` (``cfg.synonyms``; sentence pairs default to
    ``cfg.augment.parallel_text``). With ``glossaries``, each is loaded on its own (``BilingualDictionary``) and
    precision@k of every signal is added to the report. Writes ``OUT/candidates.json`` (the dictionary),
    ``OUT/ranked_<signal>.json`` and ``OUT/discovery_report.json``; returns the report.
    """
    from raysparse.augment import BilingualDictionary
    from raysparse.model import SparseEncoder

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    scfg = cfg.synonyms
    paths = list(scfg.parallel_text or cfg.augment.parallel_text)
    if not paths:
        raise ValueError(
            "no parallel text: set synonyms.parallel_text (or augment.parallel_text) to sentence-pair files"
        )
    pairs, reports = load_sentence_pairs(paths, scfg.max_pairs_per_file)
    for report in reports:
        log.info("%s", report)
    model = SparseEncoder.from_pretrained(model_dir)
    result = discover(model, pairs, scfg)
    source = f"raysparse.synonyms:{Path(model_dir).name}"
    write_dictionary(result.candidates, out / "candidates.json", source)
    for name, cands in result.ranked.items():
        write_dictionary(cands, out / f"ranked_{name}.json", f"{source}:{name}")
    report: dict[str, Any] = {
        "model_dir": str(model_dir),
        "parallel_text": [str(p) for p in paths],
        "read_reports": [str(r) for r in reports],
        "config": scfg.model_dump(),
        **result.info,
        "examples": [c.to_record(source) for c in result.candidates[:20]],
    }
    if glossaries:
        report["precision"] = {}
        for g in glossaries:
            glossary = BilingualDictionary.from_sources([g])
            vocab = set(result.ko_terms.terms)
            report["precision"][str(g)] = {
                "glossary_korean_terms": len(glossary_korean_terms(glossary)),
                "glossary_terms_in_discovery_vocab": sum(1 for t in vocab if glossary.lookup_ko(t)),
                "by_signal": evaluate_ranked(result.ranked, glossary, scfg.eval_k),
                "dictionary": {f"p@{k}": precision_at_k(result.candidates, glossary, k) for k in scfg.eval_k},
            }
    (out / "discovery_report.json").write_text(
        json.dumps(report, indent=2, ensure_ascii=False), encoding="utf-8"
    )
    return report


# ------------------------------------------------------------------------------------------------ closed loop
LOOP_METRICS = ("ndcg@10", "mrr@10", "recall@100")


def paired_permutation_test(
    a: Sequence[float], b: Sequence[float], samples: int = 10000, seed: int = 0
) -> float:
    """Two-sided p-value of ``mean(b - a) != 0`` by random sign flips of the paired differences (seeded).

    The usual significance test for two retrieval systems on the same queries (Smucker et al., 2007): under the
    null hypothesis each per-query difference is as likely to have the other sign.
    """
    diff = np.asarray(b, dtype=np.float64) - np.asarray(a, dtype=np.float64)
    if diff.size == 0:
        raise ValueError("paired_permutation_test needs at least one pair")
    observed = abs(diff.mean())
    if observed == 0.0:
        return 1.0
    rng = np.random.default_rng(seed)
    signs = rng.choice(np.array([-1.0, 1.0]), size=(samples, diff.size))
    null = np.abs((signs * diff).mean(axis=1))
    # +1 in numerator and denominator: the observed assignment is one of the permutations (never p = 0)
    return float((np.sum(null >= observed - 1e-12) + 1) / (samples + 1))


def run_loop(
    cfg: Any,
    out_dir: str | Path,
    dev_dirs: Sequence[str | Path],
    glossaries: Sequence[str | Path] = (),
    force: bool = False,
) -> dict[str, Any]:
    """One round of discover -> add to dictionary -> augment -> retrain, and both arms on the dev sets.

    1. ``baseline``: the main job (:func:`raysparse.pipeline.run_pipeline`) with ``cfg`` as given, in OUT/baseline.
    2. ``discovery``: :func:`run_discovery` on the baseline's trained model -> OUT/discovery/candidates.json
       (precision@k against ``glossaries`` when given; keep them out of ``cfg.augment`` or the check is leaked).
    3. ``discovered``: the same job with the candidates appended to ``augment.dictionaries`` (translation prior,
       code-switched queries and cross-lingual term pairs all see them), in OUT/discovered. When the baseline built
       a local backbone, this arm starts from that same backbone directory (same tokenizer, same initial weights),
       so the dictionary is the only difference.
    4. Both trained models, and both untrained backbones with their translation priors (the dictionary's direct
       effect, without training noise), on every BEIR directory in ``dev_dirs``, with a paired permutation test
       on per-query nDCG@10; OUT/loop_results.json and OUT/loop_results.md hold the tables.

    Pipeline stages and the discovery are cached by content hash, so re-running resumes.
    """
    from raysparse.data import read_beir
    from raysparse.evaluation import evaluate_model, write_metrics
    from raysparse.pipeline import file_digest, run_pipeline, run_stage

    out = Path(out_dir).resolve()
    leaked = bool(cfg.augment.use_shared_glossaries and glossaries)
    if leaked:
        log.warning("augment.use_shared_glossaries is true: the precision@k glossaries are NOT held aside")
    base_cfg = cfg.model_copy(deep=True, update={"output_dir": str(out / "baseline")})
    base = run_pipeline(base_cfg, force=force)
    base_info = {s.name: s.info for s in base.stages}
    base_key = {s.name: s.key for s in base.stages}["train"]
    base_model = base_info["train"]["model_dir"]
    parallel = list(cfg.synonyms.parallel_text or cfg.augment.parallel_text)
    discovery_key = [
        base_key,
        cfg.synonyms.model_dump(),
        [file_digest(p) for p in parallel],
        [file_digest(g) for g in glossaries],
    ]
    discovery = run_stage(
        "discovery",
        discovery_key,
        out / "discovery",
        lambda d: run_discovery(base_model, base_cfg, d, glossaries),
        force,
    ).info
    dictionary = out / "discovery" / "candidates.json"

    arm_cfg = cfg.model_copy(deep=True, update={"output_dir": str(out / "discovered")})
    arm_cfg.augment.dictionaries = [*cfg.augment.dictionaries, str(dictionary)]
    if cfg.model.backbone == "local-small":
        arm_cfg.model.backbone = str(out / "baseline" / "backbone" / "mlm")
    arm = run_pipeline(arm_cfg, force=force)
    arm_info = {s.name: s.info for s in arm.stages}
    systems = {
        "baseline": base_model,
        "discovered": arm_info["train"]["model_dir"],
        "baseline prior": base_info["backbone"]["backbone_dir"],
        "discovered prior": arm_info["backbone"]["backbone_dir"],
    }

    table: dict[str, dict[str, dict[str, float]]] = {}
    paired: dict[str, dict[str, dict[str, float]]] = {}
    for dev in dev_dirs:
        data = read_beir(dev)
        name = Path(dev).name
        table[name], per_query = {}, {}
        for system, model_dir in systems.items():
            result = evaluate_model(model_dir, data, cfg.eval)  # each model's saved encoding spec
            write_metrics(result, out / "eval" / name / system.replace(" ", "-") / "metrics.json")
            table[name][system] = {k: float(result.metrics[k]) for k in LOOP_METRICS if k in result.metrics}
            per_query[system] = result.per_query
        paired[name] = {}
        for kind, (a, b) in {
            "trained": ("baseline", "discovered"),
            "prior": ("baseline prior", "discovered prior"),
        }.items():
            qids = sorted(set(per_query[a]) & set(per_query[b]))
            xa = [per_query[a][q].get("ndcg@10", 0.0) for q in qids]
            xb = [per_query[b][q].get("ndcg@10", 0.0) for q in qids]
            paired[name][kind] = {
                "delta_ndcg@10": float(np.mean(xb) - np.mean(xa)) if qids else 0.0,
                "p_value": paired_permutation_test(xa, xb) if qids else 1.0,
                "queries": len(qids),
            }
    results = {
        "systems": systems,
        "dictionary": str(dictionary),
        "discovered_pairs": discovery["candidates"],
        "glossaries_held_aside": not leaked,
        "baseline_translation_entries": base_info["backbone"].get("translation_entries"),
        "discovered_translation_entries": arm_info["backbone"].get("translation_entries"),
        "dev": table,
        "paired": paired,
        "precision": discovery.get("precision", {}),
    }
    (out / "loop_results.json").write_text(
        json.dumps(results, indent=2, ensure_ascii=False), encoding="utf-8"
    )
    (out / "loop_results.md").write_text(loop_table(table, paired) + "\n", encoding="utf-8")
    return results


def loop_table(
    table: Mapping[str, Mapping[str, Mapping[str, float]]],
    paired: Mapping[str, Mapping[str, Mapping[str, float]]] | None = None,
) -> str:
    """Markdown: per dev set, trained and prior-only rows, baseline vs +discovered, nDCG@10 difference and p."""
    lines = [
        "| dev set | system | "
        + " | ".join(f"{m} baseline | {m} +discovered" for m in LOOP_METRICS)
        + " | Δ nDCG@10 | p (paired) |",
        "|---" * (2 * len(LOOP_METRICS) + 4) + "|",
    ]
    nan = float("nan")
    for name, arms in table.items():
        for kind, (a, b) in (
            ("trained", ("baseline", "discovered")),
            ("prior", ("baseline prior", "discovered prior")),
        ):
            if a not in arms:
                continue
            x, y = arms.get(a, {}), arms.get(b, {})
            cells = [f"{x.get(m, nan):.4f} | {y.get(m, nan):.4f}" for m in LOOP_METRICS]
            delta = y.get("ndcg@10", nan) - x.get("ndcg@10", nan)
            p = (paired or {}).get(name, {}).get(kind, {}).get("p_value")
            p_text = "–" if p is None else f"{p:.3f}"
            lines.append(f"| {name} | {kind} | " + " | ".join(cells) + f" | {delta:+.4f} | {p_text} |")
    return "\n".join(lines)
