"""Defaults a command reads when no path is given, resolved from the installed package.

The repository keeps the user-editable copies (``tuning/*.yaml``, ``configs/default.yaml``); the package carries
the same files under ``raysparse/resources/`` (tests/test_packaging.py checks they are identical), so a wheel
installed anywhere finds them without a checkout. A path that exists (relative to the current directory, or
absolute) always wins, so an edited copy in the working directory is used as it is.
"""

from __future__ import annotations

from pathlib import Path

RESOURCES = Path(__file__).resolve().parent / "resources"
DEFAULT_CONFIG = (
    RESOURCES / "configs" / "default.yaml"
)  # the main job's config (`raysparse run` without --config)
TUNING_DIR = RESOURCES / "tuning"  # packaged copies of the repository's tuning/*.yaml


def search_space_path(path: str | Path) -> Path:
    """``path`` when it exists; else the packaged search space of that name (``tuning/tiny.yaml``, ``tiny.yaml``
    or ``tiny`` all name ``raysparse/resources/tuning/tiny.yaml``); else ``path`` unchanged (the caller reports it)."""
    p = Path(path).expanduser()
    if p.is_file() or p.is_absolute():
        return p
    name = p.name if p.suffix in (".yaml", ".yml") else f"{p.name}.yaml"
    packaged = TUNING_DIR / name
    if packaged.is_file() and (len(p.parts) == 1 or p.parent.as_posix() == "tuning"):
        return packaged
    return p


def packaged_search_spaces() -> list[str]:
    return sorted(f.stem for f in TUNING_DIR.glob("*.yaml"))
