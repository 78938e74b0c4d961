"""The data stage: every supported input format -> Arrow tables with the schemas of :mod:`raysparse.schemas`.

Retrieval collections come back as :class:`~raysparse.schemas.RetrievalData` (corpus, queries, qrels + one
:class:`~raysparse.schemas.ReadReport` per file read); bilingual resources as ``(table, report)`` pairs. See
docs/data.md for the formats, the config keys and what counts as a skip.
"""

from raysparse.data.bilingual import (
    read_glossary_tsv,
    read_parallel_jsonl,
    read_parallel_text,
    read_parallel_tsv,
    read_prototype_synonyms,
    read_synonym_json,
    read_tatoeba,
    read_term_file,
)
from raysparse.data.common import detect_lang, normalize_text, stable_id
from raysparse.data.errors import DataFormatError
from raysparse.data.readers import (
    CROSSLINGUAL_SETS,
    MsmarcoPair,
    build_crosslingual_sets,
    load_source,
    read_beir,
    read_dated_jsonl,
    read_jsonl,
    read_line_corpus,
    read_msmarco,
    read_msmarco_pair,
    read_pairs,
    read_parquet,
    read_prototype,
    read_prototype_documents,
    read_squad,
    write_beir,
)
from raysparse.data.safe_pickle import RestrictedUnpickler, safe_load_pickle, safe_loads
from raysparse.data.sample import load_sample, sample_bilingual, sample_dir

__all__ = [
    "CROSSLINGUAL_SETS",
    "DataFormatError",
    "MsmarcoPair",
    "RestrictedUnpickler",
    "build_crosslingual_sets",
    "detect_lang",
    "load_sample",
    "load_source",
    "normalize_text",
    "read_beir",
    "read_dated_jsonl",
    "read_glossary_tsv",
    "read_jsonl",
    "read_line_corpus",
    "read_msmarco",
    "read_msmarco_pair",
    "read_pairs",
    "read_parallel_jsonl",
    "read_parallel_text",
    "read_parallel_tsv",
    "read_parquet",
    "read_prototype",
    "read_prototype_documents",
    "read_prototype_synonyms",
    "read_squad",
    "read_synonym_json",
    "read_tatoeba",
    "read_term_file",
    "safe_load_pickle",
    "safe_loads",
    "sample_bilingual",
    "sample_dir",
    "stable_id",
    "write_beir",
]
