"""File permissions of what raysparse writes.

Some writers create files private to their owner whatever the umask says: transformers' ``save_pretrained`` writes
``model.safetensors`` as 0600 (measured with transformers 5.x) while the config and tokenizer files next to it get
0644. A model written by one user (or by a root job on a cluster) into a shared directory would then be unreadable by
everybody else. :func:`apply_umask` gives such files the mode a plain ``open()`` would have given them.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path


def current_umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux), else by setting and restoring."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def apply_umask(path: str | Path) -> None:
    """Files under ``path`` (or ``path`` itself) get at least the read/write bits ``0o666 & ~umask`` allows.

    Only adds permissions the umask grants (never removes any, never adds execute bits), and only on files this
    process owns.
    """
    mask = current_umask()
    wanted = 0o666 & ~mask
    root = Path(path)
    files = [root] if root.is_file() else [p for p in root.rglob("*") if p.is_file()]
    uid = os.getuid() if hasattr(os, "getuid") else None
    for f in files:
        st = f.stat()
        if uid is not None and st.st_uid != uid:
            continue
        mode = stat.S_IMODE(st.st_mode)
        if mode | wanted != mode:
            f.chmod(mode | wanted)
