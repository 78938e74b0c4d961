"""The demo's HTTP server: the standard library's ThreadingHTTPServer, one page, one JSON route.

Routes: ``GET /`` the page (``raysparse/resources/demo/index.html``: plain HTML, CSS and JS, no external assets, so
it works offline); ``GET /api/search?q=TEXT`` :meth:`DemoSearcher.query` as JSON (400 with ``{"error"}`` for an empty
query, 502 when OpenSearch fails); ``GET /api/info`` the index, model mode and hybrid weight. Binds 127.0.0.1 by
default: the demo has no authentication, so exposing it is the operator's explicit choice (``--host``).
"""

from __future__ import annotations

import json
import logging
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, urlsplit

from raysparse.config import redact_secrets
from raysparse.demo.core import DemoSearcher

log = logging.getLogger(__name__)


def page_html() -> bytes:
    """The single page, read from the package's resources."""
    return resources.files("raysparse").joinpath("resources/demo/index.html").read_bytes()


def make_handler(searcher: DemoSearcher) -> type[BaseHTTPRequestHandler]:
    page = page_html()
    # the model is a torch module shared by the server's threads: one query at a time through it
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        server_version = "raysparse-demo"

        def log_message(self, format: str, *args: Any) -> None:
            log.info("%s %s", self.address_string(), format % args)

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def _json(self, status: int, payload: Any) -> None:
            self._send(
                status, json.dumps(payload, ensure_ascii=False).encode(), "application/json; charset=utf-8"
            )

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            if url.path in ("/", "/index.html"):
                self._send(HTTPStatus.OK, page, "text/html; charset=utf-8")
            elif url.path == "/api/info":
                self._json(
                    HTTPStatus.OK,
                    {
                        "index": searcher.index,
                        "query_mode": searcher.model.query_mode,
                        "bm25_weight": searcher.bm25_weight,
                        "size": searcher.size,
                    },
                )
            elif url.path == "/api/search":
                text = (parse_qs(url.query).get("q") or [""])[0]
                if not text.strip():
                    self._json(HTTPStatus.BAD_REQUEST, {"error": "the query is empty"})
                    return
                try:
                    with lock:
                        result = searcher.query(text)
                except Exception as err:  # OpenSearch down, index deleted: the page shows the reason
                    log.exception("query %r failed", text)
                    message = redact_secrets(f"{type(err).__name__}: {err}")
                    self._json(HTTPStatus.BAD_GATEWAY, {"error": message})
                    return
                self._json(HTTPStatus.OK, result)
            else:
                self._json(HTTPStatus.NOT_FOUND, {"error": f"no route {url.path}"})

    return Handler


def make_server(searcher: DemoSearcher, host: str = "127.0.0.1", port: int = 8080) -> ThreadingHTTPServer:
    """A bound server (``port`` 0 picks a free one: read ``server.server_address``); call ``serve_forever``."""
    server = ThreadingHTTPServer((host, port), make_handler(searcher))
    server.daemon_threads = True
    return server
