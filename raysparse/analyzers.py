"""Korean-aware analyzers for BM25: Kiwi morphemes, character bigrams, or a Hugging Face tokenizer.

An analyzer maps a batch of texts to a batch of token lists. The same analyzer is used when indexing (mining,
the BM25 baseline, OpenSearch's pre-analysed BM25 field) and when querying, so its output must be deterministic.

Why three:
- ``kiwi``: content morphemes (nouns, verb/adjective stems, foreign words, numbers) — the best Korean BM25 on most
  sets, but ~270 docs/s on 2 cores, so it is the slow part of mining.
- ``bigram``: overlapping character bigrams of each whitespace token plus the token itself for Latin words —
  ~35x faster, no model, close to Kiwi on KorQuAD-like data and worse on some sets (measure).
- ``hf``: the sparse encoder's own WordPiece/Unigram vocabulary, so BM25 and the model see the same terms.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Sequence
from functools import lru_cache

Analyzer = Callable[[Sequence[str]], list[list[str]]]

_HANGUL = re.compile(r"[\uac00-\ud7a3]")
_WORD = re.compile(r"\w+", re.UNICODE)

# Kiwi part-of-speech tags kept as index terms: nouns, verb/adjective stems, roots, foreign words, hanja, numbers.
KIWI_CONTENT_TAGS = frozenset(
    {
        "NNG",
        "NNP",
        "NNB",
        "NR",
        "NP",
        "VV",
        "VA",
        "XR",
        "SL",
        "SH",
        "SN",
        "MAG",
        "VV-R",
        "VA-R",
        "VV-I",
        "VA-I",
    }
)


def normalize(text: str) -> str:
    """NFKC (full-width Latin, compatibility jamo) and lower-casing; Hangul syllables are unchanged by NFKC."""
    return unicodedata.normalize("NFKC", text).lower()


def is_hangul(text: str) -> bool:
    return bool(_HANGUL.search(text))


def hangul_ratio(text: str) -> float:
    """Share of Hangul syllables among the non-space characters (the plan's ">80% Korean" filter)."""
    chars = [c for c in text if not c.isspace()]
    if not chars:
        return 0.0
    return sum(1 for c in chars if _HANGUL.match(c)) / len(chars)


_SCRIPT_RUN = re.compile(r"[\uac00-\ud7a3]+|[^\W\uac00-\ud7a3]+", re.UNICODE)


def bigram_tokens(text: str) -> list[str]:
    """Character bigrams of Hangul runs (a 1-syllable run kept whole); Latin/digit runs kept whole.

    Words are split into script runs first, so a mixed word such as "actifed는" or "api를" yields the English term
    ("actifed", "api") plus its Hangul part, instead of Latin character bigrams that lose the English word.
    """
    tokens: list[str] = []
    for word in _WORD.findall(normalize(text)):
        for run in _SCRIPT_RUN.findall(word):
            if _HANGUL.match(run):
                if len(run) == 1:
                    tokens.append(run)
                else:
                    tokens.extend(run[i : i + 2] for i in range(len(run) - 1))
            else:
                tokens.append(run)
    return tokens


def bigram_analyzer(texts: Sequence[str]) -> list[list[str]]:
    return [bigram_tokens(t) for t in texts]


@lru_cache(maxsize=1)
def get_kiwi(num_workers: int = 0):
    """One Kiwi instance per process (loading its model takes ~1 s); the model ships inside the kiwipiepy wheel."""
    from kiwipiepy import Kiwi

    return Kiwi(num_workers=num_workers)


def kiwi_token_form(form: str, tag: str) -> str:
    """The index term for one Kiwi token: stems of verbs/adjectives get '다' so 검색하다/검색했다 agree."""
    form = normalize(form)
    if tag.startswith(("VV", "VA")):
        return form + "다"
    return form


def kiwi_analyzer(texts: Sequence[str]) -> list[list[str]]:
    """Content morphemes of each text (Kiwi), normalised; batches go through Kiwi's multi-text API.

    Kiwi's list API needs worker threads (a single-threaded Kiwi raises "asyncAnalyze doesn't work at single
    thread mode"), so batches use a multi-threaded instance (one thread per core); results equal per-text calls.
    """
    texts = list(texts)
    if len(texts) <= 1:
        return [_kiwi_terms(get_kiwi().tokenize(t)) for t in texts]
    results = get_kiwi(-1).tokenize(texts)
    return [_kiwi_terms(tokens) for tokens in results]


def _kiwi_terms(tokens) -> list[str]:
    return [kiwi_token_form(tok.form, tok.tag) for tok in tokens if tok.tag in KIWI_CONTENT_TAGS]


def hf_analyzer_factory(tokenizer_name_or_path: str) -> Analyzer:
    """Word pieces of a Hugging Face tokenizer (special tokens excluded)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_name_or_path)

    def analyze(texts: Sequence[str]) -> list[list[str]]:
        encoded = tokenizer(list(texts), add_special_tokens=False, truncation=True, max_length=512)
        return [tokenizer.convert_ids_to_tokens(ids) for ids in encoded["input_ids"]]

    return analyze


def get_analyzer(name: str, hf_tokenizer: str | None = None) -> Analyzer:
    """Return the analyzer called ``name`` (``kiwi``, ``bigram`` or ``hf``)."""
    if name == "bigram":
        return bigram_analyzer
    if name == "kiwi":
        return kiwi_analyzer
    if name == "hf":
        if not hf_tokenizer:
            raise ValueError("the 'hf' analyzer needs a tokenizer name or path (mining.hf_tokenizer)")
        return hf_analyzer_factory(hf_tokenizer)
    raise ValueError(f"unknown analyzer {name!r}; choose kiwi, bigram or hf")
