"""OpenSearch client and auth (basic, TLS, AWS SigV4), plugin discovery and the package's errors."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from raysparse.config import OpenSearchConfig


class OpenSearchError(RuntimeError):
    """A request OpenSearch answered with an error we cannot recover from (message names index and cause)."""


class PluginUnavailable(OpenSearchError):
    """The cluster lacks a plugin a feature needs (neural-search, ml-commons, analysis-nori)."""


class ServerUnreachable(OpenSearchError):
    """Nothing answers at the URL (connection refused, DNS, TLS handshake): the message names the URL."""


# --------------------------------------------------------------------------------------------- client
def make_client(cfg: OpenSearchConfig | None = None, url: str | None = None, timeout: float = 60.0):
    """An ``opensearchpy.OpenSearch`` client for ``cfg`` (``url`` overrides ``cfg.url``).

    Basic auth when ``username`` is set; TLS from an ``https://`` URL with ``verify_certs``; AWS SigV4 (Amazon
    OpenSearch Service) when ``aws_region`` is set — that needs boto3, which is optional and imported only then.
    5xx answers are retried by the transport (``retry_on_status``), 429s by the bulk helper with back-off.
    """
    from opensearchpy import OpenSearch, RequestsHttpConnection

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
        kwargs.update(connection_class=RequestsHttpConnection)
    elif cfg.username:
        kwargs["http_auth"] = (cfg.username, cfg.password.get_secret_value() if cfg.password else "")
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
    """``GET /`` once; raises :class:`ServerUnreachable` naming ``url`` when nothing answers there.

    Called before long jobs (encoding a corpus) so a stopped server is one clear line, not a traceback after minutes.
    """
    from opensearchpy.exceptions import AuthenticationException, AuthorizationException, ConnectionError

    try:
        return dict(client.info())
    except ConnectionError as exc:
        cause = getattr(exc, "info", None) or exc
        raise ServerUnreachable(f"no OpenSearch answers at {url} ({type(cause).__name__})") from exc
    except (AuthenticationException, AuthorizationException) as exc:
        raise OpenSearchError(f"{url}: the server refused the credentials (HTTP {exc.status_code})") from exc
