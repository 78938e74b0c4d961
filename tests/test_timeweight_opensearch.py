"""Search-time recency (function_score decay on the date field) against the real OpenSearch server."""

from __future__ import annotations

from datetime import datetime

import pytest

from raysparse.config import TimeConfig
from raysparse.opensearch import (
    create_index,
    index_documents,
    index_mapping,
    lexical_encoder_factory,
    recency_from_config,
    recency_query,
    search_run,
)

pytestmark = pytest.mark.opensearch


@pytest.fixture(scope="module")
def dated_petitions(shared_data):
    from raysparse.corpus.dated import read_dated_source

    data = read_dated_source(shared_data / "corpora" / "petitions-dated" / "petitions_2019-08")
    return data.corpus.slice(0, 30).to_pylist()


def test_recency_switch_follows_config():
    assert recency_from_config(TimeConfig()) is None
    assert recency_from_config(TimeConfig(opensearch_recency=True)) is None  # master switch off
    kwargs = recency_from_config(TimeConfig(enabled=True, opensearch_recency=True, opensearch_scale="10d"))
    assert kwargs is not None and kwargs["scale"] == "10d"
    body = recency_query({"match_all": {}}, **kwargs)
    assert body["function_score"]["functions"][0]["exp"]["date"]["scale"] == "10d"
    with pytest.raises(ValueError, match="decay must be one of"):
        recency_query({"match_all": {}}, decay="cubic")


def test_recency_function_score_orders_newer_first_and_matches_the_formula(
    client, index_name, dated_petitions
):
    # The same real petition text three times with different dates (equal BM25 scores), plus 29 other petitions.
    base = dated_petitions[0]
    dates = {
        "copy-old": datetime(2019, 6, 1),
        "copy-mid": datetime(2019, 7, 16),
        "copy-new": datetime(2019, 8, 31),
    }
    copies = [{**base, "doc_id": doc_id, "date": d} for doc_id, d in dates.items()]
    rows = copies + dated_petitions[1:]
    create_index(client, index_name, index_mapping(with_date=True))
    index_documents(client, index_name, rows, lexical_encoder_factory("bigram")())

    query = {"q": base["title"] or base["text"][:60]}
    plain = search_run(client, index_name, query, mode="bm25", size=10)["q"]
    assert plain["copy-old"] == pytest.approx(plain["copy-mid"]) == pytest.approx(plain["copy-new"])
    assert max(plain, key=plain.get) in dates  # the copies are the best match without recency too

    scale_days, decay = 30, 0.5
    recency = {"origin": "2019-08-31", "scale": f"{scale_days}d", "decay": "exp", "decay_value": decay}
    decayed = search_run(client, index_name, query, mode="bm25", size=10, recency=recency)["q"]
    ranked = sorted(decayed, key=lambda d: -decayed[d])
    copy_order = [d for d in ranked if d in dates]
    assert copy_order == [
        "copy-new",
        "copy-mid",
        "copy-old",
    ]  # documented direction: newer first among equals
    origin = datetime(2019, 8, 31)
    for doc_id, when in dates.items():
        age_days = (origin - when).days
        expected = plain[doc_id] * decay ** (age_days / scale_days)  # exp decay: decay^(distance/scale)
        assert decayed[doc_id] == pytest.approx(expected, rel=1e-4)

    gauss = search_run(
        client, index_name, query, mode="bm25", size=50, recency={**recency, "decay": "gauss"}
    )["q"]
    age = (origin - dates["copy-old"]).days
    assert gauss["copy-old"] == pytest.approx(
        plain["copy-old"] * decay ** ((age / scale_days) ** 2), rel=1e-4
    )
