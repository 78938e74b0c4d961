"""Corpus builders: Wikipedia dumps -> passages (cached Parquet), dated corpora -> time splits and windows.

See docs/corpus.md. The output of every builder is the corpus schema :data:`raysparse.schemas.CORPUS` as Parquet,
which ``data.format=parquet`` reads as is (its ``doc_id`` column is recognised) for mining and training.
"""

from raysparse.corpus.dated import split_by_time, time_windows

__all__ = ["split_by_time", "time_windows"]
