"""Per-query latency at batch 1 and index size per document: the cost columns of the evaluation tables.

Latency is what one search costs in this process, end to end for one query: analyse/encode the query text, score it
against the in-process index, take the top k. It is measured on the first ``n`` queries of the collection, one at a
time, after one untimed warm-up query (first calls pay for lazy initialisation), with ``time.perf_counter``; p50 and
p99 are ``numpy.percentile`` (linear interpolation) over those queries. It depends on the machine and its load, so a
table that reports it says where it was measured.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np


def measure_latency(search_one: Callable[[str], Any], texts: Sequence[str], n: int) -> dict[str, Any]:
    """Time ``search_one(text)`` on the first ``n`` texts, one at a time; p50/p99 in milliseconds + every sample."""
    texts = list(texts)[: max(int(n), 0)]
    if not texts:
        return {}
    search_one(texts[0])  # warm-up, untimed
    samples = []
    for text in texts:
        t0 = time.perf_counter()
        search_one(text)
        samples.append((time.perf_counter() - t0) * 1000.0)
    values = np.asarray(samples)
    return {
        "latency_p50_ms": float(np.percentile(values, 50)),
        "latency_p99_ms": float(np.percentile(values, 99)),
        "latency_queries": len(samples),
        "samples_ms": [round(float(v), 4) for v in samples],
    }


def threads_info() -> dict[str, int]:
    """The intra-op threads torch used while timing (the machine's load is for the report to state)."""
    import torch

    return {"torch_threads": int(torch.get_num_threads())}
