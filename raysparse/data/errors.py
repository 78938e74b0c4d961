"""The one error type of the data stage."""

from __future__ import annotations


class DataFormatError(ValueError):
    """Malformed input; the message names the file, the record (line or index) and the field at fault."""
