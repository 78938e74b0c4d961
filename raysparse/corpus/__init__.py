"""Corpus builders: Wikipedia dumps -> passages (cached Parquet), dated corpora -> time splits and windows.

See docs/corpus.md. The output of every builder is the corpus schema :data:`raysparse.schemas.CORPUS` as Parquet,
which ``data.format=parquet`` (with ``data.id_field=doc_id``) reads for mining and training.
"""

from raysparse.corpus.dated import split_by_time, time_windows

__all__ = ["split_by_time", "time_windows"]
