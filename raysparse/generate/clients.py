"""HTTP clients for the LLM servers users run: Ollama's native API and the OpenAI-compatible chat API.

Both go through one ``httpx.Client`` per client object, which brings what a long generation run needs from a
maintained HTTP library: a keep-alive connection pool (one TCP/TLS handshake per connection, not per request; the
pool holds at most ``max_connections``, the stage passes ``generate.concurrency``), proxies from the environment
(``HTTP_PROXY`` / ``HTTPS_PROXY`` / ``ALL_PROXY`` / ``NO_PROXY``, ``SSL_CERT_FILE``: httpx's ``trust_env``), and
exact timeouts: ``connect_timeout`` bounds the TCP connect, ``read_timeout`` bounds every wait for bytes from the
server (a streamed reply may take longer in total as long as tokens keep coming). Server-sent events are decoded by
``httpx-sse``. The client is thread-safe: the stage's threads share one.

Wire formats (see docs/synthetic-queries.md):

- Ollama ``POST /api/generate`` ``{model, prompt, stream, options}`` → ``{"response": "...", "done": true, ...}``;
  streamed: NDJSON lines ``{"response": "<piece>", "done": false}`` … ``{"done": true, "done_reason": ...}``.
- Ollama ``POST /api/chat`` ``{model, messages, stream, options}`` → ``{"message": {"role", "content"}, "done"}``;
  streamed the same way with ``message.content`` pieces. A line ``{"error": "..."}`` is a server error.
- OpenAI-compatible ``POST /v1/chat/completions`` ``{model, messages, stream, temperature, max_tokens, seed}`` →
  ``choices[0].message.content``; streamed: server-sent events ``data: {chunk}`` with
  ``choices[0].delta.content`` pieces, ending with ``data: [DONE]``. ``Authorization: Bearer KEY`` when a key is set.

Retries: 429, 5xx, timeouts, refused/reset connections and broken replies (invalid JSON, a stream that ends before
its end marker) are retried with exponential back-off and full jitter, waiting at least ``Retry-After`` when the
server sends one; other 4xx are not retried. After the last try :class:`LLMRequestError` names the document, the URL,
the HTTP status and the reason.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
from httpx_sse import EventSource, SSEError

RETRYABLE_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


class LLMRequestError(RuntimeError):
    """A request failed for good (after its retries, or at once for a non-retryable status)."""

    def __init__(self, doc_id: str | None, url: str, status: int | None, reason: str, attempts: int) -> None:
        self.doc_id = doc_id
        self.url = url
        self.status = status
        self.reason = reason
        self.attempts = attempts
        status_text = f"HTTP {status}" if status is not None else "no HTTP status"
        super().__init__(
            f"document {doc_id!r}: POST {url} failed after {attempts} attempt(s): {status_text}: {reason}"
        )

    @property
    def kind(self) -> str:
        """A short reason for the report's counts (``HTTP 429``, ``timeout``, ``malformed response``, ...)."""
        if self.status is not None:
            return f"HTTP {self.status}"
        for key in ("timeout", "malformed response", "stream ended early", "connection"):
            if key in self.reason:
                return key
        return "request failed"


class _Retryable(Exception):
    """One failed attempt that may succeed when tried again."""

    def __init__(self, reason: str, status: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.retry_after = retry_after


class _Fatal(Exception):
    def __init__(self, reason: str, status: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


@dataclass
class Completion:
    """One model reply: the full text plus what the server said about it (kept with every output row)."""

    text: str
    model: str
    attempts: int
    latency_s: float
    meta: dict[str, Any] = field(default_factory=dict)  # finish/done reason, token counts, ...


def parse_retry_after(value: str | None) -> float | None:
    """``Retry-After`` as seconds (delta-seconds or an HTTP date); None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError, IndexError):
        return None


def backoff_delay(
    attempt: int, base: float, cap: float, retry_after: float | None, rng: random.Random
) -> float:
    """Seconds to wait before retry number ``attempt`` (1-based): full jitter over ``base * 2**(attempt-1)``
    capped at ``cap``, but never less than the server's ``Retry-After``."""
    delay = rng.uniform(0.0, min(cap, base * 2 ** (attempt - 1)))
    if retry_after is not None:
        delay = max(delay, retry_after)
    return delay


def _error_text(body: bytes) -> str:
    """The message of an error body in either API's shape, else the start of the body."""
    text = body.decode("utf-8", "replace").strip()
    try:
        obj = json.loads(text)
    except ValueError:
        return text[:200] or "(empty body)"
    if isinstance(obj, dict):
        err = obj.get("error", obj)
        if isinstance(err, dict):
            return str(err.get("message") or err)[:200]
        return str(err)[:200]
    return text[:200]


class _HttpClient:
    """POST JSON with timeouts and retries; subclasses build the request body and read the reply."""

    api = ""

    def __init__(
        self,
        url: str,
        model: str,
        *,
        connect_timeout: float = 10.0,
        read_timeout: float = 120.0,
        max_retries: int = 4,
        backoff_base: float = 1.0,
        backoff_max: float = 30.0,
        stream: bool = False,
        temperature: float = 0.7,
        max_tokens: int = 256,
        seed: int | None = None,
        api_key: str | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng_seed: int | None = None,
        max_connections: int = 8,
    ) -> None:
        parts = urlsplit(url if "://" in url else f"http://{url}")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"generate.url {url!r} is not an http(s) URL")
        self.base_url = (url if "://" in url else f"http://{url}").rstrip("/")
        self._prefix = parts.path.rstrip("/")
        self.model = model
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.stream = stream
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.seed = seed
        self.api_key = api_key
        self._sleep = sleep
        self._rng = random.Random(rng_seed)
        self._http = httpx.Client(
            # read/write bound every wait for bytes; a thread waits for a pooled connection as long as it takes
            timeout=httpx.Timeout(read_timeout, connect=connect_timeout, pool=None),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
            headers=self._headers(),
            trust_env=True,  # proxies and CA bundle from the environment, like curl and the official SDKs
        )

    # -- building blocks --------------------------------------------------------------------------------------
    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return headers

    def close(self) -> None:
        """Close the pooled connections (the client is unusable afterwards)."""
        self._http.close()

    def __enter__(self) -> _HttpClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def url_for(self, path: str) -> str:
        return f"{self.base_url}{path}"

    def _attempt(self, method: str, path: str, body: dict[str, Any] | None, read: Callable) -> Any:
        """One try on a pooled connection: send, check the status, hand the streaming response to ``read``."""
        headers = {"Accept": "text/event-stream"} if self.stream and self.api == "openai" and body else None
        try:
            with self._http.stream(method, self.url_for(path), json=body, headers=headers) as resp:
                if resp.status_code >= 400:
                    reason = _error_text(resp.read())
                    if resp.status_code in RETRYABLE_STATUS:
                        retry_after = parse_retry_after(resp.headers.get("Retry-After"))
                        raise _Retryable(reason, resp.status_code, retry_after)
                    raise _Fatal(reason, resp.status_code)
                return read(resp)
        except httpx.TimeoutException as err:
            raise _Retryable(
                f"timeout ({type(err).__name__}: {err or 'no bytes within read_timeout'})"
            ) from None
        except httpx.RemoteProtocolError as err:  # body shorter than announced, chunked stream cut off
            raise _Retryable(f"stream ended early ({err})") from None
        except httpx.TransportError as err:  # refused, reset, DNS, proxy errors
            raise _Retryable(f"connection error: {type(err).__name__}: {err}") from None

    def _with_retries(
        self, method: str, path: str, body: dict[str, Any] | None, read: Callable, doc_id: str | None
    ) -> tuple[Any, int]:
        """``read``'s result and the number of attempts it took."""
        attempts = 0
        while True:
            attempts += 1
            try:
                return self._attempt(method, path, body, read), attempts
            except _Fatal as err:
                raise LLMRequestError(doc_id, self.url_for(path), err.status, err.reason, attempts) from None
            except _Retryable as err:
                if attempts > self.max_retries:
                    raise LLMRequestError(
                        doc_id, self.url_for(path), err.status, err.reason, attempts
                    ) from None
                self._sleep(
                    backoff_delay(attempts, self.backoff_base, self.backoff_max, err.retry_after, self._rng)
                )

    def _get_json(self, path: str) -> Any:
        def read(resp: httpx.Response) -> Any:
            return _loads(resp.read(), "response body")

        result, _ = self._with_retries("GET", path, None, read, None)
        return result

    # -- API -------------------------------------------------------------------------------------------------
    def complete(self, prompt: str, doc_id: str | None = None) -> Completion:
        """Send ``prompt`` and return the whole reply (streamed or not); raises :class:`LLMRequestError`."""
        path, body = self._request(prompt)
        read = self._read_stream if self.stream else self._read_body
        t0 = time.perf_counter()
        (text, meta), attempts = self._with_retries("POST", path, body, read, doc_id)
        return Completion(
            text=text,
            model=str(meta.pop("model", None) or self.model),
            attempts=attempts,
            latency_s=time.perf_counter() - t0,
            meta=meta,
        )

    def list_models(self) -> list[str]:
        """Model names the server offers (a cheap reachability check before a long run)."""
        raise NotImplementedError

    def _request(self, prompt: str) -> tuple[str, dict[str, Any]]:
        raise NotImplementedError

    def _read_body(self, resp: httpx.Response) -> tuple[str, dict[str, Any]]:
        raise NotImplementedError

    def _read_stream(self, resp: httpx.Response) -> tuple[str, dict[str, Any]]:
        raise NotImplementedError


def _loads(raw: bytes | str, what: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError as err:
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
        raise _Retryable(f"malformed response: {what} is not JSON ({err}): {text[:80]!r}") from None


def _drain(rest: Iterator[Any]) -> None:
    """Read a stream to its end after its end marker: only a fully read response returns its connection to the
    keep-alive pool (the chunked body's last chunk follows the marker)."""
    for _ in rest:
        pass


class OllamaClient(_HttpClient):
    """Ollama's native API: ``/api/chat`` (default) or ``/api/generate``, NDJSON when streaming."""

    api = "ollama"

    def __init__(self, url: str, model: str, *, endpoint: str = "chat", **kwargs: Any) -> None:
        super().__init__(url, model, **kwargs)
        if endpoint not in ("chat", "generate"):
            raise ValueError(f"Ollama endpoint must be 'chat' or 'generate', got {endpoint!r}")
        self.endpoint = endpoint

    def _request(self, prompt: str) -> tuple[str, dict[str, Any]]:
        options: dict[str, Any] = {"temperature": self.temperature, "num_predict": self.max_tokens}
        if self.seed is not None:
            options["seed"] = self.seed
        body: dict[str, Any] = {"model": self.model, "stream": self.stream, "options": options}
        if self.endpoint == "chat":
            body["messages"] = [{"role": "user", "content": prompt}]
        else:
            body["prompt"] = prompt
        return f"/api/{self.endpoint}", body

    def _piece(self, obj: Any, what: str) -> str:
        if not isinstance(obj, dict):
            raise _Retryable(f"malformed response: {what} is not a JSON object")
        if "error" in obj:
            raise _Retryable(f"server error in reply: {obj['error']}")
        if self.endpoint == "chat":
            message = obj.get("message")
            if not isinstance(message, dict) or not isinstance(message.get("content", ""), str):
                raise _Retryable(f"malformed response: {what} has no message.content")
            return message.get("content", "")
        piece = obj.get("response")
        if not isinstance(piece, str):
            raise _Retryable(f"malformed response: {what} has no 'response' string")
        return piece

    @staticmethod
    def _meta(obj: dict[str, Any]) -> dict[str, Any]:
        keys = ("model", "done_reason", "prompt_eval_count", "eval_count", "total_duration")
        return {k: obj[k] for k in keys if k in obj}

    def _read_body(self, resp: httpx.Response) -> tuple[str, dict[str, Any]]:
        obj = _loads(resp.read(), "response body")
        text = self._piece(obj, "response body")
        return text, self._meta(obj)

    def _read_stream(self, resp: httpx.Response) -> tuple[str, dict[str, Any]]:
        pieces: list[str] = []
        lines = resp.iter_lines()
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            obj = _loads(line, f"stream line {n}")
            if not isinstance(obj, dict):
                raise _Retryable(f"malformed response: stream line {n} is not a JSON object")
            if obj.get("done") is True and "error" not in obj:
                pieces.append(self._piece(obj, f"stream line {n}") if self._has_piece(obj) else "")
                _drain(lines)
                return "".join(pieces), self._meta(obj)
            pieces.append(self._piece(obj, f"stream line {n}"))
        raise _Retryable('stream ended early: no line with "done": true')

    def _has_piece(self, obj: dict[str, Any]) -> bool:
        return ("message" in obj) if self.endpoint == "chat" else ("response" in obj)

    def list_models(self) -> list[str]:
        obj = self._get_json("/api/tags")
        return [m.get("name") or m.get("model") for m in obj.get("models", []) if isinstance(m, dict)]


class OpenAIChatClient(_HttpClient):
    """The OpenAI-compatible chat API (vLLM, llama.cpp server, Ollama's /v1, hosted APIs), SSE when streaming."""

    api = "openai"

    def _request(self, prompt: str) -> tuple[str, dict[str, Any]]:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [{"role": "user", "content": prompt}],
            "stream": self.stream,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
        }
        if self.seed is not None:
            body["seed"] = self.seed
        # /v1 is part of the API; a url that already ends in /v1 is accepted too
        path = "/chat/completions" if self._prefix.endswith("/v1") else "/v1/chat/completions"
        return path, body

    @staticmethod
    def _choice(obj: Any, what: str) -> dict[str, Any]:
        if not isinstance(obj, dict):
            raise _Retryable(f"malformed response: {what} is not a JSON object")
        if "error" in obj:
            raise _Retryable(f"server error in reply: {_error_text(json.dumps(obj).encode())}")
        choices = obj.get("choices")
        if not isinstance(choices, list):
            raise _Retryable(f"malformed response: {what} has no 'choices' list")
        return choices[0] if choices and isinstance(choices[0], dict) else {}

    def _read_body(self, resp: httpx.Response) -> tuple[str, dict[str, Any]]:
        obj = _loads(resp.read(), "response body")
        choice = self._choice(obj, "response body")
        message = choice.get("message")
        if not isinstance(message, dict):
            raise _Retryable("malformed response: choices[0] has no 'message'")
        content = message.get("content") or ""
        meta = {"model": obj.get("model"), "finish_reason": choice.get("finish_reason")}
        if isinstance(obj.get("usage"), dict):
            meta["usage"] = obj["usage"]
        return str(content), meta

    def _read_stream(self, resp: httpx.Response) -> tuple[str, dict[str, Any]]:
        pieces: list[str] = []
        meta: dict[str, Any] = {}

        def event(payload: str) -> bool:
            if payload.strip() == "[DONE]":
                return True
            obj = _loads(payload, "stream event")
            if isinstance(obj, dict) and obj.get("model"):
                meta["model"] = obj["model"]
            if isinstance(obj, dict) and isinstance(obj.get("usage"), dict):
                meta["usage"] = obj["usage"]
            choice = self._choice(obj, "stream event")
            delta = choice.get("delta") or {}
            if not isinstance(delta, dict):
                raise _Retryable("malformed response: choices[0].delta is not an object")
            if delta.get("content"):
                pieces.append(str(delta["content"]))
            if choice.get("finish_reason"):
                meta["finish_reason"] = choice["finish_reason"]
            return False

        try:
            events = EventSource(resp).iter_sse()  # data lines joined, comments and other fields handled
            for sse in events:
                if sse.data and event(sse.data):
                    _drain(events)
                    return "".join(pieces), meta
        except SSEError as err:  # not an event stream at all (e.g. a JSON body despite "stream": true)
            raise _Retryable(f"malformed response: {err}") from None
        raise _Retryable("stream ended early: no 'data: [DONE]'")

    def list_models(self) -> list[str]:
        path = "/models" if self._prefix.endswith("/v1") else "/v1/models"
        obj = self._get_json(path)
        return [m.get("id") for m in obj.get("data", []) if isinstance(m, dict)]


def make_client(cfg: Any, **overrides: Any) -> _HttpClient:
    """The client a :class:`~raysparse.config.GenerateConfig` describes (``model`` must be set)."""
    if not cfg.model:
        raise ValueError("generate.model is not set: name the model the server should run (--model)")
    kwargs: dict[str, Any] = {
        "connect_timeout": cfg.connect_timeout,
        "read_timeout": cfg.read_timeout,
        "max_retries": cfg.max_retries,
        "backoff_base": cfg.backoff_base,
        "backoff_max": cfg.backoff_max,
        "stream": cfg.stream,
        "temperature": cfg.temperature,
        "max_tokens": cfg.max_tokens,
        "seed": cfg.seed,
        "max_connections": max(1, int(cfg.concurrency)),
        **overrides,
    }
    if cfg.api == "ollama":
        return OllamaClient(cfg.url, cfg.model, endpoint=cfg.ollama_endpoint, **kwargs)
    kwargs.setdefault("api_key", os.environ.get(cfg.api_key_env) or None)
    return OpenAIChatClient(cfg.url, cfg.model, **kwargs)
