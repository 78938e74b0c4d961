"""ml-commons: register, deploy and call sparse models (SPARSE_ENCODING / SPARSE_TOKENIZE) on the server.

What the bundles are (written by ``raysparse export --format opensearch``, see :mod:`raysparse.export`):
a SPARSE_ENCODING zip (TorchScript ``.pt`` or ``.onnx`` + ``tokenizer.json``) and, for inference-free models, a
SPARSE_TOKENIZE zip (``tokenizer.json`` + ``idf.json``), each with a ``.register.json`` beside it.

:func:`deploy_bundle` is the whole route, checked against ml-commons 2.19.1 on a real node
(``scripts/opensearch.sh start --with-ml``):

1. the cluster settings local-file registration needs are *checked*; they are changed only with
   ``apply_settings=True``, and what was changed is reported (``DeployedModel.settings_changed``);
2. idempotent: a model with the same name and the zip's sha256 already registered is reused (deployed if it is
   not), never registered twice;
3. ``_register_meta`` + ``upload_chunk`` (chunks of ``chunk_bytes``), with the zip's sha256 and size;
4. ``_deploy``, then poll the model until ``DEPLOYED`` (a ``_predict`` straight after ``_deploy`` answers
   ``Model not ready yet``), ``DEPLOY_FAILED`` raising with the task's error, a timeout raising too.

:func:`predict_sparse` calls ``_predict`` and returns one ``{token: weight}`` per text — the server-side query
encoder behind ``raysparse search --server-encode``.
"""

from __future__ import annotations

import hashlib
import json
import time
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from raysparse.opensearch.client import OpenSearchError, PluginUnavailable, installed_plugins
from raysparse.opensearch.mapping import SPARSE_FIELD, TermEncoder, TermWeights

ML_PLUGIN = "opensearch-ml"
ML_BASE = "/_plugins/_ml"
FUNCTIONS = ("SPARSE_ENCODING", "SPARSE_TOKENIZE")
#: cluster settings local-file registration of a local sparse model needs (value wanted)
REQUIRED_SETTINGS = {
    "plugins.ml_commons.allow_registering_model_via_local_file": "true",
    "plugins.ml_commons.only_run_on_ml_node": "false",
}


class MLCommonsError(OpenSearchError):
    """ml-commons refused or failed a step (message names the model and the step)."""


@dataclass
class BundleInfo:
    """What a bundle zip is: from its ``.register.json`` when present, else from its members."""

    path: Path
    name: str
    version: str
    function_name: str
    model_format: str
    sha256: str
    size: int
    description: str = ""


@dataclass
class DeployedModel:
    """Result of :func:`deploy_bundle`."""

    model_id: str
    name: str
    function_name: str
    sha256: str
    state: str
    reused: bool = False  # found registered already (same name + sha256)
    settings_changed: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "model_id": self.model_id,
            "name": self.name,
            "function_name": self.function_name,
            "sha256": self.sha256,
            "state": self.state,
            "reused": self.reused,
            "settings_changed": dict(self.settings_changed),
            "seconds": round(self.seconds, 2),
        }


def bundle_info(zip_path: str | Path) -> BundleInfo:
    """Read a bundle's identity; raises :class:`MLCommonsError` naming the file when it is not a sparse bundle."""
    path = Path(zip_path)
    if not path.is_file():
        raise MLCommonsError(f"{path}: no such bundle")
    try:
        with zipfile.ZipFile(path) as zf:
            members = [n for n in zf.namelist() if not n.endswith("/")]
    except zipfile.BadZipFile as exc:
        raise MLCommonsError(f"{path}: not a zip file") from exc
    if "tokenizer.json" not in members:
        raise MLCommonsError(f"{path}: no tokenizer.json at the zip root (not an ml-commons sparse bundle)")
    models = [n for n in members if n.endswith((".pt", ".onnx"))]
    if len(models) > 1:
        raise MLCommonsError(f"{path}: {len(models)} model files {models}; ml-commons takes exactly one")
    inferred = "SPARSE_ENCODING" if models else "SPARSE_TOKENIZE"
    if inferred == "SPARSE_TOKENIZE" and "idf.json" not in members:
        raise MLCommonsError(f"{path}: neither a model file (.pt/.onnx) nor idf.json")
    model_format = "ONNX" if models and models[0].endswith(".onnx") else "TORCH_SCRIPT"
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    register_json = path.with_suffix(".register.json")
    meta: dict[str, Any] = {}
    if register_json.is_file():
        try:
            meta = json.loads(register_json.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise MLCommonsError(f"{register_json}: line {exc.lineno}: not JSON ({exc.msg})") from exc
        if meta.get("function_name", inferred) != inferred:
            raise MLCommonsError(
                f"{register_json}: field function_name is {meta['function_name']!r} but the zip holds a "
                f"{inferred} bundle"
            )
        if meta.get("model_content_hash_value", digest) != digest:
            raise MLCommonsError(
                f"{register_json}: field model_content_hash_value does not match the zip's sha256 "
                "(zip changed after export?)"
            )
    return BundleInfo(
        path=path,
        name=str(meta.get("name") or path.stem),
        version=str(meta.get("version") or "1.0.0"),
        function_name=inferred,
        model_format=str(meta.get("model_format") or model_format),
        sha256=digest,
        size=path.stat().st_size,
        description=str(meta.get("description") or f"raysparse {inferred} bundle {path.name}"),
    )


def _request(client, method: str, path: str, body: Any = None, what: str = "") -> dict[str, Any]:
    from opensearchpy.exceptions import TransportError

    try:
        return dict(client.transport.perform_request(method, path, body=body))
    except TransportError as exc:
        info = exc.info if isinstance(exc.info, Mapping) else {}
        reason = info.get("error", exc.error)
        if isinstance(reason, Mapping):
            reason = reason.get("reason", reason)
        raise MLCommonsError(f"ml-commons {what or path}: HTTP {exc.status_code}: {reason}") from exc


def require_ml_commons(client) -> None:
    if ML_PLUGIN not in installed_plugins(client):
        raise PluginUnavailable(
            "ml-commons (opensearch-ml) is not installed on this cluster "
            "(scripts/opensearch.sh start --with-ml starts a local node with it)"
        )


def ml_settings(client) -> dict[str, str]:
    """Effective values of :data:`REQUIRED_SETTINGS` (persistent > transient > node/default)."""
    flat = client.cluster.get_settings(include_defaults=True, flat_settings=True)
    out: dict[str, str] = {}
    for key in REQUIRED_SETTINGS:
        for scope in ("transient", "persistent", "defaults"):
            if key in flat.get(scope, {}):
                out[key] = str(flat[scope][key]).lower()
                break
    return out


def ensure_settings(client, apply: bool = False) -> dict[str, str]:
    """Check the settings local registration needs; with ``apply`` set the missing ones (persistent) and return them.

    Without ``apply`` a missing setting raises, naming each key: raysparse never changes cluster-wide settings
    unasked.
    """
    current = ml_settings(client)
    missing = {k: v for k, v in REQUIRED_SETTINGS.items() if current.get(k) != v}
    if not missing:
        return {}
    if not apply:
        wanted = ", ".join(f"{k}={v} (now {current.get(k, 'unset')})" for k, v in missing.items())
        raise MLCommonsError(
            f"cluster settings needed to register a local model: {wanted}; set them yourself or pass "
            "--apply-settings (persistent cluster settings)"
        )
    client.cluster.put_settings(body={"persistent": {k: v == "true" for k, v in missing.items()}})
    return missing


def find_model(client, name: str, sha256: str) -> dict[str, Any] | None:
    """A registered model (not a chunk) with this name and content hash, or None."""
    body = {
        "size": 100,
        "query": {
            "bool": {
                "filter": [{"term": {"model_content_hash_value": sha256}}],
                "must_not": [{"exists": {"field": "chunk_number"}}],
            }
        },
    }
    try:
        hits = _request(client, "POST", f"{ML_BASE}/models/_search", body, "model search")["hits"]["hits"]
    except MLCommonsError as exc:
        if "index_not_found" in str(exc) or "no such index" in str(exc).lower():
            return None  # nothing registered yet on this cluster
        raise
    for hit in hits:
        src = hit.get("_source", {})
        if src.get("name") == name and src.get("model_content_hash_value") == sha256:
            return {"model_id": hit["_id"], **src}
    return None


def _model_group_id(client, name: str) -> str | None:
    body = {"size": 10, "query": {"term": {"name.keyword": name}}}
    try:
        hits = _request(client, "POST", f"{ML_BASE}/model_groups/_search", body, "model group search")[
            "hits"
        ]["hits"]
    except MLCommonsError:
        return None
    for hit in hits:
        if hit.get("_source", {}).get("name") == name:
            return str(hit["_id"])
    return None


def register_bundle(client, info: BundleInfo, chunk_bytes: int = 10_000_000) -> str:
    """``_register_meta`` + ``upload_chunk``: returns the new model id (state REGISTERED)."""
    payload = info.path.read_bytes()
    chunks = [payload[i : i + chunk_bytes] for i in range(0, len(payload), chunk_bytes)] or [b""]
    meta: dict[str, Any] = {
        "name": info.name,
        "version": info.version,
        "description": info.description,
        "model_format": info.model_format,
        "function_name": info.function_name,
        "model_content_hash_value": info.sha256,
        "model_content_size_in_bytes": info.size,
        "total_chunks": len(chunks),
    }
    # a second version of a name goes into the name's model group (ml-commons refuses a duplicate group name)
    group = _model_group_id(client, info.name)
    if group:
        meta["model_group_id"] = group
    model_id = _request(client, "POST", f"{ML_BASE}/models/_register_meta", meta, f"register {info.name}")[
        "model_id"
    ]
    for i, chunk in enumerate(chunks):
        _request(
            client,
            "POST",
            f"{ML_BASE}/models/{model_id}/upload_chunk/{i}",
            chunk,
            f"upload chunk {i} of {model_id}",
        )
    return str(model_id)


def model_state(client, model_id: str) -> str:
    return str(
        _request(client, "GET", f"{ML_BASE}/models/{model_id}", what=f"get model {model_id}").get(
            "model_state"
        )
    )


def deploy_model(client, model_id: str, timeout: float = 300.0, poll: float = 1.0) -> str:
    """``_deploy`` and poll until DEPLOYED; raises with the task's error on DEPLOY_FAILED, or on timeout."""
    task = _request(client, "POST", f"{ML_BASE}/models/{model_id}/_deploy", what=f"deploy {model_id}")
    task_id = task.get("task_id")
    deadline = time.monotonic() + timeout
    state = ""
    while time.monotonic() < deadline:
        state = model_state(client, model_id)
        if state == "DEPLOYED":
            return state
        if state == "DEPLOY_FAILED" or (task_id and _task_failed(client, task_id)):
            raise MLCommonsError(f"model {model_id}: deploy failed: {_task_error(client, task_id)}")
        time.sleep(poll)
    raise MLCommonsError(f"model {model_id}: not DEPLOYED after {timeout:.0f} s (state {state or 'unknown'})")


def _task(client, task_id: str) -> dict[str, Any]:
    return _request(client, "GET", f"{ML_BASE}/tasks/{task_id}", what=f"task {task_id}")


def _task_failed(client, task_id: str) -> bool:
    return _task(client, task_id).get("state") == "FAILED"


def _task_error(client, task_id: str | None) -> str:
    if not task_id:
        return "no task id"
    task = _task(client, task_id)
    error = task.get("error", f"task state {task.get('state')}")
    if isinstance(error, str):
        try:  # ml-commons stores {node id: message} as a JSON string
            parsed = json.loads(error)
            error = "; ".join(str(v) for v in parsed.values()) if isinstance(parsed, dict) else error
        except json.JSONDecodeError:
            pass
    return str(error)[:500]


def deploy_bundle(
    client,
    zip_path: str | Path,
    *,
    apply_settings: bool = False,
    timeout: float = 300.0,
    chunk_bytes: int = 10_000_000,
) -> DeployedModel:
    """Register (unless already registered with the same name and sha256) and deploy one bundle; see the module doc."""
    start = time.perf_counter()
    info = bundle_info(zip_path)
    require_ml_commons(client)
    changed = ensure_settings(client, apply=apply_settings)
    found = find_model(client, info.name, info.sha256)
    if found is not None:
        model_id = found["model_id"]
        state = str(found.get("model_state"))
        if state != "DEPLOYED":
            state = deploy_model(client, model_id, timeout=timeout)
        reused = True
    else:
        model_id = register_bundle(client, info, chunk_bytes)
        state = deploy_model(client, model_id, timeout=timeout)
        reused = False
    return DeployedModel(
        model_id=model_id,
        name=info.name,
        function_name=info.function_name,
        sha256=info.sha256,
        state=state,
        reused=reused,
        settings_changed=changed,
        seconds=time.perf_counter() - start,
    )


def _sparse_from_result(result: Mapping[str, Any]) -> TermWeights:
    outputs = result.get("output") or []
    for out in outputs:
        data = out.get("dataAsMap") or {}
        response = data.get("response")
        if isinstance(response, list) and response and isinstance(response[0], Mapping):
            return {str(k): float(v) for k, v in response[0].items()}
        if isinstance(response, Mapping):
            return {str(k): float(v) for k, v in response.items()}
    raise MLCommonsError(f"unexpected _predict output: {json.dumps(result)[:300]}")


def predict_sparse(
    client, model_id: str, texts: Sequence[str], function_name: str | None = None
) -> list[TermWeights]:
    """Server-side encoding: ``_predict`` on a deployed sparse model -> one ``{token: weight}`` per text."""
    fn = (function_name or _function_name(client, model_id)).lower()
    body = {"text_docs": list(texts)}
    response = _request(
        client, "POST", f"{ML_BASE}/_predict/{fn}/{model_id}", body, f"predict with {model_id}"
    )
    results = response.get("inference_results") or []
    if len(results) != len(texts):
        raise MLCommonsError(f"_predict with {model_id}: {len(results)} results for {len(texts)} texts")
    return [_sparse_from_result(r) for r in results]


def _function_name(client, model_id: str) -> str:
    return str(
        _request(client, "GET", f"{ML_BASE}/models/{model_id}", what=f"get model {model_id}")["algorithm"]
    )


def server_query_encoder(client, model_id: str) -> TermEncoder:
    """A :data:`TermEncoder` that encodes queries on the server (ml-commons ``_predict``), as OpenSearch users would."""
    fn = _function_name(client, model_id)

    def encode(texts: Sequence[str]) -> list[TermWeights]:
        return predict_sparse(client, model_id, texts, fn)

    return encode


def register_sparse_tokenize_model(
    client, bundle_zip: str | Path, name: str = "raysparse-query-tokenizer", chunk_bytes: int = 10_000_000
) -> str:
    """Kept for callers of the earlier API: deploy a SPARSE_TOKENIZE bundle and return its model id.

    Unlike the earlier version it waits until DEPLOYED and changes no cluster settings (use :func:`deploy_bundle`
    with ``apply_settings=True`` for that). ``name`` is ignored: the bundle's ``.register.json`` names the model.
    """
    del name
    deployed = deploy_bundle(client, bundle_zip, chunk_bytes=chunk_bytes)
    if deployed.function_name != "SPARSE_TOKENIZE":
        raise MLCommonsError(f"{bundle_zip}: a {deployed.function_name} bundle, not SPARSE_TOKENIZE")
    return deployed.model_id


def sparse_ingest_pipeline(model_id: str, source_field: str = "text") -> dict[str, Any]:
    """Ingest pipeline body for clusters WITH neural-search: its ``sparse_encoding`` processor fills SPARSE_FIELD.

    The neural-search plugin is not on Maven Central, so this body is not run here; raysparse indexes vectors it
    encodes itself (:mod:`raysparse.opensearch.ingest`), which gives the same stored features.
    """
    return {
        "description": "raysparse: encode documents with an ml-commons sparse model",
        "processors": [
            {"sparse_encoding": {"model_id": model_id, "field_map": {source_field: SPARSE_FIELD}}}
        ],
    }
