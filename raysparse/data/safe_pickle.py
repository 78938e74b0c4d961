"""Loading the users' prototype pickles without giving them the power to run code.

``pickle.load`` executes whatever callable a pickle names (``os.system`` via ``__reduce__`` is the classic), so a
pair file downloaded from a colleague or a bucket is a remote-code-execution vector. The prototype's pair files are
plain containers of strings and numbers, which pickle encodes with opcodes that need no global lookup at all; the
few globals that plain data may still need (``set``/``frozenset`` under old protocols, ``bytes`` under protocol 2)
are an explicit allow-list. Everything else is refused before it is imported, let alone called.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

from raysparse.data.errors import DataFormatError

# (module, name) pairs plain data may reference. Each is a constructor of a value, never a function with effects.
ALLOWED_GLOBALS: frozenset[tuple[str, str]] = frozenset(
    {
        ("builtins", "set"),
        ("builtins", "frozenset"),
        ("builtins", "complex"),
        ("builtins", "bytearray"),
        ("builtins", "bytes"),
        ("builtins", "slice"),
        ("builtins", "range"),
        ("collections", "OrderedDict"),
        # Protocol 0-2 encode bytes as _codecs.encode(str, "latin1"); harmless text->bytes conversion.
        ("_codecs", "encode"),
        # Python 2 era pickles name builtins "__builtin__".
        ("__builtin__", "set"),
        ("__builtin__", "frozenset"),
    }
)


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler whose ``find_class`` only resolves :data:`ALLOWED_GLOBALS` and refuses the rest."""

    def __init__(self, file: Any, source: str = "<pickle>") -> None:
        super().__init__(file)
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in ALLOWED_GLOBALS:
            if module == "__builtin__":
                module = "builtins"
            return super().find_class(module, name)
        raise DataFormatError(
            f"{self.source}: the pickle tried to load {module}.{name}; raysparse refuses non-plain pickles for "
            "safety (only lists, tuples, dicts, sets, strings and numbers are allowed). Convert the file to "
            "JSON lines or Parquet with the program that wrote it."
        )


def safe_loads(data: bytes, source: str = "<pickle>") -> Any:
    """Unpickle ``data`` with :class:`RestrictedUnpickler`; malformed bytes raise :class:`DataFormatError`."""
    try:
        return RestrictedUnpickler(io.BytesIO(data), source).load()
    except DataFormatError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError) as err:
        raise DataFormatError(f"{source}: not a readable pickle ({type(err).__name__}: {err})") from None


def safe_load_pickle(path: str | Path) -> Any:
    """Load a pickle file that may only contain plain data (see the module docstring); never runs its code."""
    path = Path(path)
    return safe_loads(path.read_bytes(), str(path))
