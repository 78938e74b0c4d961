"""Synthetic queries (doc2query) from an LLM server the user runs, on Ray Data.

- :mod:`~raysparse.generate.clients` — ``OllamaClient`` / ``OpenAIChatClient`` (timeouts, retries, streaming);
- :mod:`~raysparse.generate.prompts` — template files and reply parsing;
- :mod:`~raysparse.generate.stage` — ``generate_for_batch`` (plain core) and the resumable Parquet shards;
- :mod:`~raysparse.generate.filters` — Korean ratio, length, dedup, round trip;
- :mod:`~raysparse.generate.driver` — ``generate_queries``: all of it, ending in a BEIR directory.

Guide: docs/synthetic-queries.md. No model runs here: a real server (Ollama, vLLM, llama.cpp) is needed.
"""

from raysparse.generate.clients import (
    Completion,
    LLMRequestError,
    OllamaClient,
    OpenAIChatClient,
    make_client,
)
from raysparse.generate.driver import (
    GENERATIONS,
    GenerateReport,
    filter_table,
    generate_queries,
    write_generated_beir,
)
from raysparse.generate.filters import FILTERS, FilterReport, apply_filters, korean_ratio
from raysparse.generate.prompts import PromptTemplate, load_prompt, parse_queries, shipped_prompts
from raysparse.generate.stage import RAW, generate_for_batch, read_raw, run_generation

__all__ = [
    "FILTERS",
    "GENERATIONS",
    "RAW",
    "Completion",
    "FilterReport",
    "GenerateReport",
    "LLMRequestError",
    "OllamaClient",
    "OpenAIChatClient",
    "PromptTemplate",
    "apply_filters",
    "filter_table",
    "generate_for_batch",
    "generate_queries",
    "korean_ratio",
    "load_prompt",
    "make_client",
    "parse_queries",
    "read_raw",
    "run_generation",
    "shipped_prompts",
    "write_generated_beir",
]
