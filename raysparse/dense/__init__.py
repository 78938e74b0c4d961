"""The dense bi-encoder baseline (issue 20): encoder, exact inner-product index, builder from a backbone.

It shares the sparse model's backbone, encoding spec, training loop and evaluation; only the head (pooling instead
of vocabulary logits) and the index (dense inner product instead of posting lists) differ.
"""

from raysparse.dense.encoder import DenseEncoder, build_dense_encoder, is_dense_dir, pool
from raysparse.dense.index import DenseIndex

__all__ = ["DenseEncoder", "DenseIndex", "build_dense_encoder", "is_dense_dir", "pool"]
