"""The small Korean/English sample shipped inside the package: the default job's offline data.

Written for raysparse (no third-party text): ~120 documents, ~100 queries (Korean and English, some needing
Korean<->English term matching), a term glossary and parallel sentences. See ``resources/sample/README.md``.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from raysparse.data.bilingual import read_glossary_tsv, read_parallel_tsv
from raysparse.data.readers import read_beir
from raysparse.schemas import RetrievalData

SAMPLE_DIR = Path(__file__).resolve().parent.parent / "resources" / "sample"


def sample_dir() -> Path:
    """Where the shipped sample lives (inside the installed package)."""
    return SAMPLE_DIR


def load_sample() -> RetrievalData:
    """The shipped BEIR sample (corpus, queries, qrels/test.tsv)."""
    return read_beir(SAMPLE_DIR, split="test")


def sample_bilingual() -> tuple[pa.Table, pa.Table]:
    """The sample's ``glossary.tsv`` as TERM_PAIRS and ``parallel.tsv`` as SENTENCE_PAIRS."""
    terms, _ = read_glossary_tsv(SAMPLE_DIR / "glossary.tsv")
    sentences, _ = read_parallel_tsv(SAMPLE_DIR / "parallel.tsv")
    return terms, sentences
