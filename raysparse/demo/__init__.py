"""``raysparse demo``: a search page over an OpenSearch index — BM25, sparse and hybrid side by side.

:mod:`raysparse.demo.core` computes what the page shows (plain data, no HTTP); :mod:`raysparse.demo.server` serves
the page and a JSON route with the standard library's HTTP server. See docs/deployment.md ("Search demo").
"""

from raysparse.demo.core import DemoSearcher, highlight_spans, script_of, snippet, surface
from raysparse.demo.server import make_server, page_html

__all__ = ["DemoSearcher", "highlight_spans", "make_server", "page_html", "script_of", "snippet", "surface"]
