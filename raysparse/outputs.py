"""Writing results safely: never a half-written file that looks complete, never a silent mix with older results.

* :func:`atomic_write_text` / :func:`atomic_target` write under a temporary name in the same directory and rename
  into place (a rename is atomic on one filesystem), so a killed run leaves ``.NAME.partial``, not ``NAME``.
* :func:`claim_output_dir` is what a command calls before writing into a directory that may hold the results of an
  earlier run: it refuses (exit 2, naming what is there) unless the user passed ``--overwrite``, and then removes
  exactly the earlier outputs of *this* command (nothing else the user keeps in that directory).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

from raysparse.errors import InputError


def partial_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.partial")


@contextlib.contextmanager
def atomic_target(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (file or directory); on success it is renamed to ``path``.

    An existing ``path`` is replaced only once the new one is complete; on error the partial output is removed.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = partial_path(target)
    _remove(tmp)
    try:
        yield tmp
    except BaseException:
        _remove(tmp)
        raise
    if tmp.is_dir() and target.exists():
        old = target.with_name(f".{target.name}.old")
        _remove(old)
        target.rename(old)
        tmp.rename(target)
        _remove(old)
    else:
        os.replace(tmp, target)


def atomic_write_text(path: str | Path, text: str) -> Path:
    with atomic_target(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def claim_output_dir(
    out: str | Path,
    command: str,
    earlier_outputs: Callable[[Path], list[Path]],
    overwrite: bool,
) -> list[Path]:
    """Make ``out`` ready for ``command``'s results; return what was removed.

    ``earlier_outputs(out)`` lists the files/directories an earlier run of the command left there. When there are
    any: without ``overwrite`` an :class:`InputError` names them (nothing is touched); with ``overwrite`` exactly
    those are removed, so no stale result (an old report, an old baseline) sits beside the new ones.
    """
    root = Path(out)
    if root.exists() and not root.is_dir():
        raise InputError(f"{command} --out {root}: exists and is not a directory")
    found = sorted(earlier_outputs(root)) if root.is_dir() else []
    if found and not overwrite:
        shown = ", ".join(str(p.relative_to(root)) for p in found[:5]) + (" ..." if len(found) > 5 else "")
        raise InputError(
            f"{command} --out {root}: holds the results of an earlier run ({shown}); choose another --out or "
            "pass --overwrite to replace them (only these earlier outputs are removed)"
        )
    for path in found:
        _remove(path)
    root.mkdir(parents=True, exist_ok=True)
    return found
