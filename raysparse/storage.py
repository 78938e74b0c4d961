"""Where a command's results go when it runs on a cluster, and how to bring them back.

``ray job submit --working-dir . -- python jobs/pipeline.py`` runs the command with its working directory set to Ray's
unpacked copy of the upload, inside the head node's session directory. A relative output directory would put the
model there, where nobody looks and where it is deleted with the session. So inside a Ray job (or when attached to a
multi-node cluster) a relative ``--out`` / ``output_dir`` is resolved against ``ray.storage_path`` instead
(``STORAGE/results/OUT``); when ``ray.storage_path`` is itself relative, the command refuses to start.

A storage URI (``s3://``, ``gs://``, ``file://``) cannot be written to as a directory: the command then writes into a
local staging folder and copies it to ``URI/results/OUT`` when it finishes (:meth:`OutputLocation.publish`). The
copies go through ``pyarrow.fs``, which Ray's own storage layer uses too, so any URI Ray accepts works here.

:func:`pull` copies a model or a whole run from a location (path or URI) back to a local directory
(``raysparse pull``), and :func:`local_model` does the same on the fly for commands that read ``--model``.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from raysparse.config import ConfigError

log = logging.getLogger(__name__)

RESULTS_SUBDIR = "results"  # STORAGE/results/OUT: a job's outputs, next to Ray Train's STORAGE/<run name>
# Ray sets these in every job's driver (job supervisor); the cwd test catches drivers started some other way.
_JOB_ENV = ("RAY_JOB_CONFIG_JSON_ENV_VAR", "RAY_JOB_SUBMISSION_ID")
_WORKING_DIR_MARK = "runtime_resources/working_dir_files"


def is_uri(location: str | Path) -> bool:
    return "://" in str(location)


def in_ray_job() -> bool:
    """True in the driver of a ``ray job submit`` job (its cwd is Ray's temporary copy of the working dir)."""
    if any(os.environ.get(name) for name in _JOB_ENV):
        return True
    return _WORKING_DIR_MARK in Path.cwd().as_posix()


def multi_node_cluster(address: str | None) -> bool:
    """True when this process is attached to a Ray cluster with more than one alive node.

    Looked at only when Ray is already initialised or ``ray.address`` names a cluster (``auto``, ``HOST:PORT``,
    ``ray://...``): a plain local run never starts Ray just to find out, and RAY_ADDRESS exported for ``ray job
    submit`` (``http://HEAD:8265``) is not a reason to connect.
    """
    import ray

    if not ray.is_initialized():
        if not address or address.startswith(("http://", "https://")):
            return False
        from raysparse.ray_utils import init_ray

        init_ray(address)
    return sum(1 for n in ray.nodes() if n.get("Alive")) > 1


@dataclass
class OutputLocation:
    """Where a command writes (``local``) and, for a storage URI, where that folder is copied to at the end."""

    local: Path
    remote: str | None = None

    def location(self, relative: str | Path = "") -> str:
        """The path or URI the user can open for ``relative`` (a file or folder under the output directory)."""
        rel = Path(relative).as_posix()
        rel = "" if rel == "." else rel
        if self.remote:
            return f"{self.remote}/{rel}" if rel else self.remote
        return str(self.local / rel) if rel else str(self.local)

    def publish(self) -> None:
        """Copy the local staging folder to the storage URI (a no-op for a plain directory)."""
        if not self.remote:
            return
        fs, base = _filesystem(self.remote)
        fs.create_dir(base, recursive=True)
        import pyarrow.fs as pafs

        pafs.copy_files(
            str(self.local), base, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs
        )
        log.info("copied %s to %s", self.local, self.remote)


def refusal(out: str) -> str:
    """The one line a job gets when its relative output directory has nowhere safe to go (the CLI prefixes
    ``raysparse COMMAND:``)."""
    return (
        f"output directory {out!r} is relative and this runs inside a Ray job (or on a multi-node "
        "cluster), where it would land in the job's temporary working-dir copy; pass an absolute --out on "
        "storage every node shares, or set ray.storage_path to an absolute path or an s3:// / gs:// URI "
        f"(results then go to STORAGE/{RESULTS_SUBDIR}/{out})"
    )


def resolve_output(
    out: str | Path,
    storage_path: str,
    command: str,
    *,
    address: str | None = None,
    on_cluster: bool | None = None,
) -> OutputLocation:
    """The output location of a command whose output directory is ``out``.

    - an absolute path is used as it is; a URI is written through a local staging folder, then copied to it;
    - a relative path outside a Ray job (and off multi-node clusters) is taken from the current directory, as usual;
    - a relative path inside a Ray job goes to ``ray.storage_path/results/OUT`` when the storage path is absolute or
      a URI, and is refused with one line (:class:`ConfigError`, exit code 2) when it is relative.

    ``on_cluster`` overrides the detection (tests); ``address`` is ``ray.address``.
    """
    text = str(out)
    if is_uri(text):
        return OutputLocation(_staging_dir(text), text.rstrip("/"))
    path = Path(text).expanduser()
    if path.is_absolute():
        return OutputLocation(path)
    if on_cluster is None:
        on_cluster = in_ray_job() or multi_node_cluster(address)
    if not on_cluster:
        return OutputLocation(path.resolve())
    storage = storage_path.strip()
    if is_uri(storage):
        remote = f"{storage.rstrip('/')}/{RESULTS_SUBDIR}/{path.as_posix()}"
        location = OutputLocation(_staging_dir(remote), remote)
    else:
        root = Path(storage).expanduser()
        if not root.is_absolute():
            raise ConfigError(refusal(text))
        location = OutputLocation(root / RESULTS_SUBDIR / path)
    log.info("%s: inside a Ray job; relative output %r goes to %s", command, text, location.location())
    return location


def storage_for_outputs(storage_path: str, location: OutputLocation) -> str:
    """``ray.storage_path`` as an absolute path or URI: a relative one is taken from the output directory, never from
    the job's working-dir copy (Ray Train checkpoints then live next to the outputs)."""
    if is_uri(storage_path) or Path(storage_path).expanduser().is_absolute():
        return str(Path(storage_path).expanduser()) if not is_uri(storage_path) else storage_path
    if location.remote:
        return f"{location.remote}/{storage_path}"
    return str((location.local / storage_path).resolve())


def _staging_dir(uri: str) -> Path:
    """A local folder a command writes into before its outputs are copied to ``uri``."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in uri)[-100:]
    path = Path(tempfile.gettempdir()) / f"raysparse-staging-{os.getuid()}" / safe
    path.mkdir(parents=True, exist_ok=True)
    return path


def _filesystem(location: str):
    """``(pyarrow FileSystem, path inside it)`` for a URI or a local path."""
    import pyarrow.fs as pafs

    if is_uri(location):
        try:
            return pafs.FileSystem.from_uri(location)
        except Exception as err:  # pyarrow raises ArrowInvalid / OSError with its own wording
            raise ValueError(f"cannot open storage location {location}: {err}") from err
    return pafs.LocalFileSystem(), str(Path(location).expanduser().resolve())


def pull(location: str, dest: str | Path, *, force: bool = False) -> Path:
    """Copy a file or folder (a model, a run's results) from a path or storage URI to the local ``dest``.

    ``dest`` must not exist or be empty unless ``force`` (then it is replaced): results are never overwritten
    silently. Returns ``dest``.
    """
    import pyarrow.fs as pafs

    fs, src = _filesystem(location)
    info = fs.get_file_info(src)
    if info.type == pafs.FileType.NotFound:
        raise FileNotFoundError(f"nothing at {location}")
    target = Path(dest).expanduser()
    if target.exists() and (target.is_file() or any(target.iterdir())):
        if not force:
            raise FileExistsError(f"{target} already exists and is not empty (use --force to replace it)")
        if target.is_dir():
            shutil.rmtree(target)
        else:
            target.unlink()
    local = pafs.LocalFileSystem()
    if info.type == pafs.FileType.Directory:
        target.mkdir(parents=True, exist_ok=True)
        pafs.copy_files(src, str(target.resolve()), source_filesystem=fs, destination_filesystem=local)
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
        pafs.copy_files(src, str(target.resolve()), source_filesystem=fs, destination_filesystem=local)
    return target


def local_model(location: str | Path) -> str:
    """A local directory holding the model at ``location``: the path itself, or a cached copy of a storage URI."""
    text = str(location)
    if not is_uri(text) or text.startswith("file://"):
        return text[len("file://") :] if text.startswith("file://") else text
    cache = _staging_dir("pull-" + text)
    if cache.exists():
        shutil.rmtree(cache)
    return str(pull(text, cache))


_ABSOLUTE = re.compile(
    r"(?<![\w.~-])/(?:work|root|home|tmp|mnt|data|Users|var/folders)(?:/[^\s`'\",;:)\]\\]*)?"
)


def portable(text: str, replacements: dict[str, str] | None = None) -> str:
    """``text`` with this machine's absolute paths rewritten for committed reports and docs.

    ``replacements`` maps absolute prefixes to what to print instead (e.g. ``{str(out_dir): "OUT"}``). Then a path
    through ``shared/data`` becomes ``../shared/data/...`` (the project's data convention), a path inside the
    repository becomes relative to it, and any other absolute path keeps only its last component under ``OUT/``.
    """
    repo = Path(__file__).resolve().parents[1].as_posix()
    for prefix, new in sorted((replacements or {}).items(), key=lambda kv: -len(kv[0])):
        prefix = prefix.rstrip("/")
        text = re.sub(re.escape(prefix) + r"(?=/|\b|$)", new, text)
    # The checkout and its sibling shared/ may live under any root (CI checks out elsewhere), so these two are
    # rewritten by location before the generic pattern below, which only knows the usual roots.
    shared = Path(repo).parent.joinpath("shared").as_posix()
    text = re.sub(re.escape(shared) + r"(?=/|\b|$)", "../shared", text)
    text = re.sub(re.escape(repo) + r"(/|\b|$)", lambda m: "" if m.group(1) == "/" else ".", text)

    def repl(match: re.Match[str]) -> str:
        path = match.group(0)
        if "/shared/data" in path:
            return "../shared/data" + path.split("/shared/data", 1)[1]
        if path == repo or path.startswith(repo + "/"):
            return path[len(repo) + 1 :] or "."
        return "OUT/" + path.rstrip("/").rsplit("/", 1)[-1]

    return _ABSOLUTE.sub(repl, text)
