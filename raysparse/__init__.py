"""raysparse: Korean-English neural sparse retrieval encoders, trained on Ray and shipped into OpenSearch."""

__version__ = "0.1.0"
