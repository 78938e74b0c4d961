"""The error policy every command shares (applied once, in :func:`raysparse.cli.main`).

* A *user error* (a missing or malformed file, a bad record, a bad setting, an unreachable server, an empty result)
  is one line on stderr naming the file and line/record/field (or the URL and index), exit code 2.
* Anything else is an internal error: Python's traceback, exit code 1.
* ``--debug`` prints the traceback for user errors as well.

Cores raise :class:`InputError` (or :class:`~raysparse.data.errors.DataFormatError`,
:class:`~raysparse.config.ConfigError`, both ValueErrors) with a message that already names the place; a ValueError
raised by raysparse's own code counts as a user error too (that is the project's convention for rejected input),
while a ValueError from inside a library (numpy, torch, ...) is an internal error and keeps its traceback.
"""

from __future__ import annotations

import errno
from pathlib import Path
from types import TracebackType

_PACKAGE_DIR = str(Path(__file__).resolve().parent)


class InputError(ValueError):
    """Bad input from the user; the message names the file and line/record/field, or the URL."""


class EmptyResultError(InputError):
    """A command produced nothing (every row skipped, every request failed); ``--allow-empty`` accepts that."""


def require_nonempty(count: int, what: str, why: str, allow_empty: bool) -> None:
    """Raise :class:`EmptyResultError` for an empty result unless the user allowed it."""
    if count == 0 and not allow_empty:
        raise EmptyResultError(f"{what}: empty result ({why}); pass --allow-empty to accept an empty result")


def _last_frame_file(tb: TracebackType | None) -> str:
    last = ""
    while tb is not None:
        last = tb.tb_frame.f_code.co_filename
        tb = tb.tb_next
    return last


def _raised_by_raysparse(err: BaseException) -> bool:
    return _last_frame_file(err.__traceback__).startswith(_PACKAGE_DIR)


def _unwrap(err: BaseException) -> BaseException:
    """The user's error inside Ray's wrappers (RayTaskError carries the remote exception as ``cause``)."""
    seen = 0
    while seen < 5 and type(err).__module__.startswith("ray.") and getattr(err, "cause", None) is not None:
        err = err.cause  # type: ignore[assignment]
        seen += 1
    return err


def _connection_message(err: BaseException) -> str | None:
    """Unreachable servers, whichever client noticed (stdlib, requests, opensearch-py, httpx)."""
    import urllib.error

    if isinstance(err, urllib.error.URLError) and not isinstance(err, urllib.error.HTTPError):
        return f"cannot reach the server: {err.reason}"
    if isinstance(err, ConnectionError):
        return f"cannot reach the server: {err}"
    module, name = type(err).__module__, type(err).__name__
    if module.startswith(("requests", "urllib3", "httpx", "opensearchpy")) and (
        "Connection" in name or "Timeout" in name or "ConnectError" in name
    ):
        return f"cannot reach the server: {_first_line(str(err)).split(' caused by: ')[0]}"
    return None


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""


def user_error_message(err: BaseException) -> str | None:
    """The one line for a user error, or None when ``err`` is an internal error (keep the traceback)."""
    import gzip
    import zlib

    from raysparse.config import ConfigError

    err = _unwrap(err)
    if isinstance(err, (InputError, ConfigError)):
        return str(err)
    from raysparse.data.errors import DataFormatError

    if isinstance(err, DataFormatError):
        return str(err)
    connection = _connection_message(err)
    if connection is not None:
        return connection
    if isinstance(err, OSError) and err.filename is not None:
        return f"{err.filename}: {err.strerror or err}"
    if isinstance(
        err, (FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError, PermissionError)
    ):
        return str(err)  # raised by our readers with a message that names the path
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"{err.strerror}: {err}"
    # decoding errors a reader did not wrap: still the user's file, not our bug (readers name the file themselves)
    if isinstance(err, (UnicodeDecodeError, EOFError, gzip.BadGzipFile, zlib.error)):
        return f"cannot decode the input ({type(err).__name__}: {err})"
    try:
        import pyarrow as pa

        if isinstance(err, (pa.ArrowInvalid, pa.ArrowIOError)) and not _raised_by_raysparse(err):
            return f"cannot read the input as Arrow/Parquet: {_first_line(str(err))}"
    except ImportError:  # pragma: no cover
        pass
    for cls_name in ("OpenSearchError", "LLMRequestError", "ExportError"):
        if any(c.__name__ == cls_name and c.__module__.startswith("raysparse") for c in type(err).__mro__):
            if cls_name == "ExportError" and type(err).__name__ == "ExportParityError":
                return None  # the exported model disagrees with PyTorch: our bug, keep the traceback
            return str(err)
    if isinstance(err, ValueError) and _raised_by_raysparse(err):
        return str(err)
    return None
