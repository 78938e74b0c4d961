"""OpenSearch client and auth (basic, TLS, AWS SigV4), plugin discovery and the package's errors."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from raysparse.config import OpenSearchConfig, redact_secrets


class OpenSearchError(RuntimeError):
    """A request OpenSearch answered with an error we cannot recover from (message names index and cause)."""


class PluginUnavailable(OpenSearchError):
    """The cluster lacks a plugin a feature needs (neural-search, ml-commons, analysis-nori)."""


class ServerUnreachable(OpenSearchError):
    """Nothing answers at the URL (connection refused, DNS, TLS handshake): the message names the URL."""


class TLSFailure(ServerUnreachable):
    """The TLS handshake failed (server certificate not trusted, hostname mismatch, client certificate refused)."""


class AccessDenied(OpenSearchError):
    """The server refused the request: HTTP 401 (wrong user or password) or 403 (the user lacks a permission).

    Never retried: the same credentials get the same answer. The message names the URL, the index and what was
    refused, never the password."""


# --------------------------------------------------------------------------------------------- client
CREDENTIALS_HINT = (
    "opensearch.username / opensearch.password[_file] or RAYSPARSE_OPENSEARCH_USERNAME / _PASSWORD[_FILE]"
)
CA_HINT = "give the cluster's CA certificate (PEM) as opensearch.ca_certs or RAYSPARSE_OPENSEARCH_CA_CERTS"


def _index_of(path: str, body: Any) -> str | None:
    """The index a request is about: the path's first part, else the first line of a ``_bulk`` / ``_msearch``
    body (``{"index": {"_index": NAME}}`` / ``{"index": NAME}``)."""
    first = path.split("?", 1)[0].lstrip("/").split("/", 1)[0]
    if first and not first.startswith("_"):
        return first
    if first in ("_bulk", "_msearch") and body:
        text = body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body)
        try:
            head = json.loads(text.split("\n", 1)[0])
        except ValueError:
            return None
        if not isinstance(head, dict):
            return None
        action = next(iter(head.values()), None)
        target = (
            head.get("index")
            if first == "_msearch"
            else action.get("_index")
            if isinstance(action, dict)
            else None
        )
        if isinstance(target, list):
            target = ",".join(map(str, target))
        return str(target) if target else None
    return None


def _server_reason(exc: Any) -> str:
    info = getattr(exc, "info", None)
    if isinstance(info, Mapping):
        error = info.get("error")
        if isinstance(error, Mapping):
            return str(error.get("reason") or error.get("type") or "")
        if error:
            return str(error)
    return str(getattr(exc, "error", "") or "")


def _guarded(base: type, url: str, user: str | None) -> type:
    """``base`` (an opensearch-py connection class) whose refusals and TLS failures become one clear error.

    401/403 become :class:`AccessDenied` and TLS failures :class:`TLSFailure` raised from the connection, so the
    transport does not retry them (it retries its own ConnectionErrors, TLS ones included, ``max_retries`` times)
    and bulk helpers do not swallow them into per-batch failures. Messages name ``url`` (without user info), the
    index and the refused request; they never hold the password.
    """
    from opensearchpy.exceptions import AuthenticationException, AuthorizationException, SSLError

    shown = redact_secrets(url)

    class Guarded(base):  # type: ignore[misc, valid-type]
        def log_request_fail(self, method, full_url, path, body, duration, status_code=None, *args, **kwargs):
            # opensearch-py logs a WARNING (with the whole traceback for connection failures) before it raises;
            # refusals, TLS failures and unreachable servers are raised as one clear line instead (a CLI's stderr
            # is that line only). Other HTTP errors (429, 5xx the transport retries) stay logged.
            if status_code is None or status_code in (401, 403):
                return
            super().log_request_fail(method, full_url, path, body, duration, status_code, *args, **kwargs)

        def perform_request(self, method, url, params=None, body=None, timeout=None, ignore=(), headers=None):
            try:
                return super().perform_request(
                    method, url, params=params, body=body, timeout=timeout, ignore=ignore, headers=headers
                )
            except AuthenticationException as exc:
                who = f"user {user!r}" if user else "no user (anonymous request)"
                raise AccessDenied(
                    f"{shown}: HTTP 401 for {who} on {method} {url}: wrong user name or password, or none given "
                    f"({CREDENTIALS_HINT})"
                ) from exc
            except AuthorizationException as exc:
                index = _index_of(url, body)
                where = f"index {index!r}" if index else "the cluster"
                reason = _server_reason(exc) or (
                    "no permission to look the index up (HEAD answers carry no reason)"
                    if method == "HEAD"
                    else "forbidden"
                )
                raise AccessDenied(
                    f"{shown}: {where}: {method} {url} refused for user {user!r} (HTTP 403): {reason}"
                ) from exc
            except SSLError as exc:
                cause = exc.info if isinstance(exc.info, BaseException) else exc
                detail = str(getattr(cause, "reason", None) or cause)
                hint = (
                    CA_HINT
                    if "CERTIFICATE_VERIFY_FAILED" in detail
                    else "check the URL's scheme and certificates"
                )
                raise TLSFailure(f"{shown}: TLS handshake failed ({_tls_reason(detail)}); {hint}") from exc

    Guarded.__name__ = Guarded.__qualname__ = f"Guarded{base.__name__}"
    return Guarded


def _tls_reason(detail: str) -> str:
    """The OpenSSL reason out of urllib3's nested wrapper text, e.g. ``certificate verify failed: self-signed ...``."""
    match = re.search(r"\[SSL: [A-Z_]+\] ([^(]+?)(?: \(_ssl\.c:\d+\))", detail)
    return match.group(1).strip() if match else detail.split(" caused by: ")[0][:200]


def _existing(key: str, path: str | None) -> str | None:
    if path is None:
        return None
    resolved = Path(path).expanduser()
    if not resolved.is_file():
        raise OpenSearchError(f"opensearch.{key}: no file at {resolved}")
    return str(resolved)


def make_client(cfg: OpenSearchConfig | None = None, url: str | None = None, timeout: float = 60.0):
    """An ``opensearchpy.OpenSearch`` client for ``cfg`` (``url`` overrides ``cfg.url``).

    Basic auth when ``username`` is set; TLS from an ``https://`` URL with ``verify_certs`` against ``ca_certs``
    (else the system's CAs), and ``client_cert``/``client_key`` when the cluster authenticates clients by
    certificate; AWS SigV4 (Amazon OpenSearch Service) when ``aws_region`` is set — that needs boto3, which is
    optional and imported only then. 5xx answers are retried by the transport (``retry_on_status``), 429s by the
    bulk helper with back-off; refusals (401/403) and TLS failures are raised at once as :class:`AccessDenied` /
    :class:`TLSFailure`.
    """
    from opensearchpy import OpenSearch, RequestsHttpConnection, Urllib3HttpConnection

    cfg = cfg or OpenSearchConfig()
    target = url or cfg.url
    kwargs: dict[str, Any] = {
        "hosts": [target],
        "timeout": timeout,
        "max_retries": cfg.max_retries,
        "retry_on_timeout": True,
        "retry_on_status": (502, 503, 504),
        "http_compress": True,
    }
    if target.startswith("https://"):
        kwargs.update(use_ssl=True, verify_certs=cfg.verify_certs, ssl_show_warn=cfg.verify_certs)
        ca_certs = _existing("ca_certs", cfg.ca_certs)
        if ca_certs:
            kwargs["ca_certs"] = ca_certs
        client_cert, client_key = (
            _existing("client_cert", cfg.client_cert),
            _existing("client_key", cfg.client_key),
        )
        if client_cert:
            kwargs.update(client_cert=client_cert, client_key=client_key)
    connection: type = Urllib3HttpConnection
    if cfg.aws_region:
        try:
            import boto3
        except ImportError as exc:
            raise OpenSearchError(
                "opensearch.aws_region is set but boto3 is not installed (pip install boto3)"
            ) from exc
        from opensearchpy import RequestsAWSV4SignerAuth

        credentials = boto3.Session().get_credentials()
        if credentials is None:
            raise OpenSearchError("opensearch.aws_region is set but boto3 found no AWS credentials")
        kwargs.update(http_auth=RequestsAWSV4SignerAuth(credentials, cfg.aws_region, "es"))
        connection = RequestsHttpConnection
    elif cfg.username:
        kwargs["http_auth"] = (cfg.username, cfg.password.get_secret_value() if cfg.password else "")
    kwargs["connection_class"] = _guarded(connection, target, cfg.username)
    return OpenSearch(**kwargs)


def installed_plugins(client) -> set[str]:
    """Component names from ``_cat/plugins`` (e.g. ``opensearch-neural-search``, ``analysis-nori``)."""
    rows = client.cat.plugins(format="json")
    return {row.get("component", "") for row in rows}


def has_neural_search(client) -> bool:
    return "opensearch-neural-search" in installed_plugins(client)


def error_reason(error: Any) -> str:
    if isinstance(error, Mapping):
        reason = f"{error.get('type', 'error')}: {error.get('reason', '')}"
        cause = error.get("caused_by")
        if isinstance(cause, Mapping):
            reason += f" (caused by {cause.get('type')}: {cause.get('reason')})"
        return reason
    return str(error)


def check_reachable(client, url: str) -> dict[str, Any]:
    """``GET /`` once; raises :class:`ServerUnreachable` naming ``url`` when nothing answers there (a
    :class:`TLSFailure` when the handshake fails), :class:`AccessDenied` when the credentials are refused.

    Called before long jobs (encoding a corpus) so a stopped server is one clear line, not a traceback after minutes.
    """
    from opensearchpy.exceptions import ConnectionError

    try:
        return dict(client.info())
    except ConnectionError as exc:
        cause = getattr(exc, "info", None) or exc
        raise ServerUnreachable(
            f"no OpenSearch answers at {redact_secrets(url)} ({type(cause).__name__})"
        ) from exc
