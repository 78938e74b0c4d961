"""A small LLM server for the tests: Ollama's native API and the OpenAI-compatible chat API over real HTTP.

No language model can run on the test machines, so this ``ThreadingHTTPServer`` on 127.0.0.1 (random port) speaks
the two wire protocols the generation stage uses, streaming and not, and answers deterministically from the document
text found in the prompt (the line starting with ``본문:``; the shipped template and the tests' templates have one):

- ``POST /api/generate`` → ``{"model", "created_at", "response", "done": true, "done_reason", counts}``; with
  ``"stream": true`` (Ollama's default) NDJSON lines ``{"response": piece, "done": false}`` … a final line with
  ``"done": true``, sent with chunked transfer encoding like Ollama;
- ``POST /api/chat`` → the same with ``"message": {"role": "assistant", "content"}``; ``GET /api/tags``;
- ``POST /v1/chat/completions`` → ``chat.completion`` JSON; with ``"stream": true`` server-sent events
  ``data: {chat.completion.chunk}`` (first delta carries the role, then content deltas, then ``finish_reason``)
  and ``data: [DONE]``; ``GET /v1/models``; ``Authorization: Bearer`` checked when ``api_key`` is set.

Replies mix what the filters must catch: document-specific Korean queries (most pass the round trip), a generic
question shared by every document (cross-document duplicate, usually not retrievable), an English question (Korean
ratio), a repeat (duplicate within the document) and a two-character one (length); the format (fenced JSON list,
numbered lines with a preamble, bullets) depends on the document.

``latency`` makes every generation take that long; ``max_in_flight`` records the most requests served at once
(how the tests check that ``generate.concurrency`` bounds the requests in flight).

Connections are kept alive between requests (HTTP/1.1 persistent connections, as Ollama and vLLM do; a fault that
cuts a reply short closes its connection) and ``connections`` counts the TCP connections accepted, so the tests can
check that a client reuses them (``keep_alive=False`` answers every request with ``Connection: close``). The server
also answers as an HTTP forward proxy would: a request whose target is an absolute URL (``POST http://host/api/chat``,
what a client configured with ``HTTP_PROXY`` sends) is served as that URL's path and recorded in ``proxied``.

Faults (``add_fault``), each for the next ``times`` matching requests (``None`` = always), optionally only for prompts
containing ``match``: ``429`` (with ``Retry-After``), ``500``, ``delay`` (sleep past the client's read timeout),
``malformed`` (a body / stream line that is not JSON), ``truncate`` (the connection closes mid-body / before the end
of the stream), ``bad_content`` (a valid response whose content is broken JSON), ``empty_content``.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

GENERIC_QUERY = "이 문서의 주요 내용은 무엇인가요?"
ENGLISH_QUERY = "What is this document about?"
SHORT_QUERY = "뭐?"
_HANGUL_WORD = re.compile(r"[\uac00-\ud7a3][\w\uac00-\ud7a3]*")


def document_of(prompt: str) -> str:
    """The document text inside a prompt: what follows ``본문:`` up to the next blank line."""
    idx = prompt.find("본문:")
    if idx < 0:
        return ""
    return prompt[idx + 3 :].strip().split("\n\n", 1)[0].strip()


def queries_for(document: str) -> list[str]:
    """The queries a 'model' writes for ``document`` (deterministic)."""
    words = _HANGUL_WORD.findall(document)
    if len(words) < 6:
        return [GENERIC_QUERY, ENGLISH_QUERY]
    mid = len(words) // 2
    specific = " ".join(words[0:3])
    return [
        f"{specific}에 대해 알려줘",
        f"{' '.join(words[mid : mid + 3])} 관련 내용",
        f"{' '.join(words[-3:])}?",
        GENERIC_QUERY,
        ENGLISH_QUERY,
        f"{specific}에 대해  알려줘?",  # the first query again (spacing, trailing '?'): a duplicate
        SHORT_QUERY,
    ]


def reply_for(document: str) -> str:
    queries = queries_for(document)
    style = int(hashlib.sha256(document.encode("utf-8")).hexdigest(), 16) % 3
    if style == 0:
        return "```json\n" + json.dumps(queries, ensure_ascii=False) + "\n```"
    if style == 1:
        return "다음은 생성된 검색 질의입니다:\n" + "\n".join(f"{i}. {q}" for i, q in enumerate(queries, 1))
    return "\n".join(f"- {q}" for q in queries)


@dataclass
class Fault:
    kind: str
    times: int | None = 1
    match: str | None = None
    retry_after: str | None = "0"
    delay: float = 2.0


class LLMServer:
    """Start with ``with LLMServer() as server:``; ``server.url`` is the root (``http://127.0.0.1:PORT``)."""

    def __init__(
        self,
        model: str = "test-ko-llm",
        api_key: str | None = None,
        latency: float = 0.0,
        keep_alive: bool = True,
    ) -> None:
        self.model = model
        self.keep_alive = keep_alive
        self.connections = 0  # TCP connections accepted
        self.proxied: list[str] = []  # absolute-URL request targets (requests that came through as a proxy)
        self.api_key = api_key
        self.latency = latency  # seconds each generation takes (a model's time to answer)
        self.in_flight = 0
        self.max_in_flight = 0  # the most generation requests served at the same time
        self.faults: list[Fault] = []
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------------------------
    def start(self) -> LLMServer:
        server = self

        class Handler(_Handler):
            owner = server

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> LLMServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._httpd is not None, "server not started"
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    # -- faults and log ---------------------------------------------------------------------------------------
    def add_fault(self, kind: str, times: int | None = 1, match: str | None = None, **kw: Any) -> None:
        with self._lock:
            self.faults.append(Fault(kind, times, match, **kw))

    def clear_faults(self) -> None:
        with self._lock:
            self.faults.clear()

    def take_fault(self, prompt: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.times == 0 or (fault.match is not None and fault.match not in prompt):
                    continue
                if fault.times is not None:
                    fault.times -= 1
                return fault
        return None

    def log(self, entry: dict[str, Any]) -> None:
        with self._lock:
            self.requests.append(entry)

    def served(self, status: int = 200) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["status"] == status and r.get("document") is not None]


class _Handler(BaseHTTPRequestHandler):
    owner: LLMServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # keep pytest output clean
        pass

    def setup(self) -> None:
        super().setup()
        with self.owner._lock:
            self.owner.connections += 1

    def parse_request(self) -> bool:
        ok = super().parse_request()
        if ok and self.path.startswith(("http://", "https://")):  # absolute-form target: we are the proxy
            with self.owner._lock:
                self.owner.proxied.append(self.path)
            parts = urlsplit(self.path)
            self.path = parts.path + (f"?{parts.query}" if parts.query else "")
        return ok

    def _connection_header(self, close: bool = False) -> None:
        """``Connection: close`` (and close after this reply) unless the connection is kept alive."""
        if close or self.close_connection or not self.owner.keep_alive:
            self.send_header("Connection", "close")
            self.close_connection = True

    # -- plumbing ------------------------------------------------------------------------------------------------
    def _send_json(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        body = json.dumps(obj, ensure_ascii=False).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self._connection_header()
        self.end_headers()
        self.wfile.write(body)

    def _start_chunked(self, content_type: str, close: bool = False) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Transfer-Encoding", "chunked")
        self._connection_header(close)
        self.end_headers()

    def _chunk(self, data: str) -> None:
        raw = data.encode("utf-8")
        self.wfile.write(f"{len(raw):x}\r\n".encode() + raw + b"\r\n")
        self.wfile.flush()

    def _end_chunked(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _error(self, status: int, message: str, openai: bool, headers: dict[str, str] | None = None) -> None:
        if openai:
            obj = {"error": {"message": message, "type": "server_error", "code": status}}
        else:
            obj = {"error": message}
        self._send_json(status, obj, headers)

    # -- routes -----------------------------------------------------------------------------------------------
    def do_GET(self) -> None:
        self.owner.log({"path": self.path, "status": 200, "document": None, "t": time.monotonic()})
        if self.path == "/api/tags":
            now = datetime.now(timezone.utc).isoformat()
            model = {
                "name": self.owner.model,
                "model": self.owner.model,
                "modified_at": now,
                "size": 1,
                "digest": "0" * 64,
                "details": {"format": "gguf", "family": "test"},
            }
            self._send_json(200, {"models": [model]})
        elif self.path == "/v1/models":
            if not self._authorised():
                return
            self._send_json(
                200,
                {
                    "object": "list",
                    "data": [
                        {
                            "id": self.owner.model,
                            "object": "model",
                            "created": int(time.time()),
                            "owned_by": "tests",
                        }
                    ],
                },
            )
        else:
            self._send_json(404, {"error": f"no route {self.path}"})

    def _authorised(self) -> bool:
        if self.owner.api_key and self.headers.get("Authorization") != f"Bearer {self.owner.api_key}":
            if self.command == "POST":  # (GETs are logged on arrival)
                self.owner.log({"path": self.path, "status": 401, "document": None, "t": time.monotonic()})
            self._send_json(
                401,
                {
                    "error": {
                        "message": "Incorrect API key provided",
                        "type": "invalid_request_error",
                        "code": "invalid_api_key",
                    }
                },
            )
            return False
        return True

    def do_POST(self) -> None:
        openai = self.path.startswith("/v1/")
        if self.path not in ("/api/generate", "/api/chat", "/v1/chat/completions"):
            self.close_connection = True  # the body was not read: the connection cannot carry another request
            self._send_json(404, {"error": f"no route {self.path}"})
            return
        length = int(self.headers.get("Content-Length") or 0)
        try:
            req = json.loads(self.rfile.read(length))
        except ValueError:
            self._error(400, "invalid JSON body", openai)
            return
        if openai and not self._authorised():
            return
        if self.path == "/api/generate":
            prompt = req.get("prompt")
        else:
            messages = req.get("messages") or []
            prompt = messages[-1].get("content") if messages and isinstance(messages[-1], dict) else None
        if not isinstance(prompt, str) or not req.get("model"):
            self._error(400, "model and prompt/messages are required", openai)
            return
        if req["model"] != self.owner.model:
            self._error(404, f"model '{req['model']}' not found", openai)
            return
        stream = req.get("stream", not openai)  # Ollama streams unless told not to; OpenAI does not
        document = document_of(prompt)
        fault = self.owner.take_fault(prompt)
        entry: dict[str, Any] = {
            "path": self.path,
            "document": document,
            "stream": stream,
            "fault": fault and fault.kind,
            "t": time.monotonic(),
            "request": req,
            "status": 200,
        }
        # logged before the reply goes out: a client never sees a reply that is not logged
        self.owner.log(entry)
        try:
            self._generating()
            if fault is not None and fault.kind in ("429", "500"):
                status = entry["status"] = int(fault.kind)
                headers = {"Retry-After": fault.retry_after} if status == 429 and fault.retry_after else None
                self._error(status, "rate limited" if status == 429 else "internal error", openai, headers)
                return
            if fault is not None and fault.kind == "delay":
                time.sleep(fault.delay)
            content = reply_for(document)
            if fault is not None and fault.kind == "bad_content":
                content = '["깨진 JSON 응답'
            elif fault is not None and fault.kind == "empty_content":
                content = ""
            kind = fault.kind if fault is not None else None
            if stream:
                self._stream(content, openai, kind)
            else:
                self._whole(content, openai, kind)
        except (BrokenPipeError, ConnectionResetError):
            entry["status"] = -1  # the client gave up (timeout) before the reply

    def _generating(self) -> None:
        """The model's time to answer; counted in flight only here, so the bytes of a reply already on their way
        to the client (which may send its next request before this thread returns) never count twice."""
        with self.owner._lock:
            self.owner.in_flight += 1
            self.owner.max_in_flight = max(self.owner.max_in_flight, self.owner.in_flight)
        try:
            time.sleep(self.owner.latency)
        finally:
            with self.owner._lock:
                self.owner.in_flight -= 1

    # -- replies ----------------------------------------------------------------------------------------------
    def _whole(self, content: str, openai: bool, fault: str | None) -> None:
        model = self.owner.model
        if openai:
            obj: dict[str, Any] = {
                "id": "chatcmpl-test",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": content},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {
                    "prompt_tokens": 10,
                    "completion_tokens": len(content),
                    "total_tokens": 10 + len(content),
                },
            }
        else:
            obj = {
                "model": model,
                "created_at": datetime.now(timezone.utc).isoformat(),
                "done": True,
                "done_reason": "stop",
                "total_duration": 1000,
                "prompt_eval_count": 10,
                "eval_count": len(content),
            }
            if self.path == "/api/chat":
                obj["message"] = {"role": "assistant", "content": content}
            else:
                obj["response"] = content
        body = json.dumps(obj, ensure_ascii=False).encode("utf-8")
        if fault == "malformed":
            body = body[: len(body) // 2] + b"<html>oops"
        self.send_response(200)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body) + (50 if fault == "truncate" else 0)))
        self._connection_header(close=fault == "truncate")  # a cut-short body ends its connection
        self.end_headers()
        self.wfile.write(body[: len(body) // 2] if fault == "truncate" else body)
        self.wfile.flush()

    def _stream(self, content: str, openai: bool, fault: str | None) -> None:
        pieces = [content[i : i + 7] for i in range(0, len(content), 7)] or [""]
        model = self.owner.model
        created = int(time.time())
        if openai:
            self._start_chunked("text/event-stream", close=fault == "truncate")

            def chunk(delta: dict[str, Any], finish: str | None) -> str:
                obj = {
                    "id": "chatcmpl-test",
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": model,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
                }
                return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"

            self._chunk(chunk({"role": "assistant", "content": ""}, None))
            for n, piece in enumerate(pieces):
                if fault == "truncate" and n == len(pieces) // 2:
                    self.wfile.write(b'40\r\ndata: {"id"')  # a chunk cut short, then the connection closes
                    self.wfile.flush()
                    return
                if fault == "malformed" and n == len(pieces) // 2:
                    self._chunk("data: {not json}\n\n")
                self._chunk(chunk({"content": piece}, None))
            self._chunk(chunk({}, "stop"))
            self._chunk("data: [DONE]\n\n")
            self._end_chunked()
            return
        self._start_chunked("application/x-ndjson")
        chat = self.path == "/api/chat"
        for n, piece in enumerate(pieces):
            if fault == "truncate" and n == len(pieces) // 2:
                self._end_chunked()  # a clean end of body, but no "done": true line
                return
            if fault == "malformed" and n == len(pieces) // 2:
                self._chunk('{"response": broken\n')
            obj: dict[str, Any] = {
                "model": model,
                "created_at": datetime.now(timezone.utc).isoformat(),
                "done": False,
            }
            if chat:
                obj["message"] = {"role": "assistant", "content": piece}
            else:
                obj["response"] = piece
            self._chunk(json.dumps(obj, ensure_ascii=False) + "\n")
        final: dict[str, Any] = {
            "model": model,
            "created_at": datetime.now(timezone.utc).isoformat(),
            "done": True,
            "done_reason": "stop",
            "total_duration": 1000,
            "eval_count": len(content),
        }
        if chat:
            final["message"] = {"role": "assistant", "content": ""}
        else:
            final["response"] = ""
        self._chunk(json.dumps(final, ensure_ascii=False) + "\n")
        self._end_chunked()
