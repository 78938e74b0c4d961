"""Prompt templates (files) and parsing the model's reply into queries.

A template is a UTF-8 text file with the placeholders ``{title}``, ``{text}`` and ``{num_queries}``; leading lines
that start with ``# `` are comments and are not sent. Placeholders are replaced literally (not ``str.format``), so
braces elsewhere in a template (a JSON example, say) need no escaping. Shipped templates live in
``raysparse/resources/prompts/`` and are named without ``.txt`` (``doc2query_ko_v1``); anything else is a path.

The version stored with every output row is ``<name>@<sha256[:12] of the template body>``: editing a template
changes its version, so resumed runs never mix replies to two different prompts under one name.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

PROMPTS_DIR = Path(__file__).resolve().parents[1] / "resources" / "prompts"
PLACEHOLDERS = ("{title}", "{text}", "{num_queries}")


@dataclass(frozen=True)
class PromptTemplate:
    name: str
    body: str
    path: str

    @property
    def sha(self) -> str:
        return hashlib.sha256(self.body.encode("utf-8")).hexdigest()[:12]

    @property
    def version(self) -> str:
        return f"{self.name}@{self.sha}"

    def render(self, title: str | None, text: str, num_queries: int) -> str:
        return (
            self.body.replace("{title}", (title or "").strip())
            .replace("{text}", text.strip())
            .replace("{num_queries}", str(num_queries))
        )


def shipped_prompts() -> list[str]:
    return sorted(p.stem for p in PROMPTS_DIR.glob("*.txt"))


def load_prompt(name_or_path: str) -> PromptTemplate:
    """A shipped template by name, or a template file; errors name the file and what is missing."""
    path = PROMPTS_DIR / f"{name_or_path}.txt"
    if not path.is_file():
        path = Path(name_or_path)
    if not path.is_file():
        raise FileNotFoundError(
            f"prompt {name_or_path!r}: neither a shipped template ({', '.join(shipped_prompts())}) nor a file"
        )
    lines = path.read_text(encoding="utf-8").splitlines()
    while lines and lines[0].startswith("# "):
        lines.pop(0)
    body = "\n".join(lines).strip() + "\n"
    if "{text}" not in body:
        raise ValueError(
            f"{path}: the prompt template has no {{text}} placeholder (the document would not be sent)"
        )
    return PromptTemplate(name=path.stem, body=body, path=str(path))


# ------------------------------------------------------------------------------------------------ reply parsing
_FENCE = re.compile(r"^```[\w-]*\s*\n(.*?)\n?```\s*$", re.DOTALL)
# "1. ", "2) ", "(3) ", "- ", "* ", "• ", "Q1: " (a space after a number: "3.1 운동" is not "3." + "1 운동")
_MARKER = re.compile(r"^\s*(?:\(?\d{1,2}\s*[.)\]:]\s+|[-*•·▪●]\s*|[Qq]\d*\s*[.:)]\s*)")
_QUOTES = "\"'“”‘’「」『』`"


def _clean(line: str) -> str:
    line = line.strip()
    line = re.sub(r"^\*\*(.*)\*\*$", r"\1", line)  # markdown bold around a whole line
    return line.strip(_QUOTES).strip()


def _from_json(obj: object) -> list[str] | None:
    if isinstance(obj, dict):
        for key in ("queries", "questions", "query", "질의", "질문"):
            if key in obj:
                return _from_json(obj[key])
        return None
    if isinstance(obj, list) and all(isinstance(x, str | dict) for x in obj):
        out = []
        for x in obj:
            if isinstance(x, dict):
                x = x.get("query") or x.get("question") or x.get("text")
                if not isinstance(x, str):
                    return None
            out.append(x)
        return out
    return None


def parse_queries(reply: str) -> tuple[list[str], str | None]:
    """Queries from a model reply, and why none could be read (``None`` when the reply parsed).

    Understood: a JSON list of strings (or ``{"queries": [...]}``), optionally in a ```json fence; numbered or
    bulleted lines (only those, so a preamble such as "다음은 질의입니다:" is not a query); otherwise every
    non-empty line. Reasons: ``empty reply``, ``invalid JSON reply`` (it starts like JSON but does not parse),
    ``JSON without a query list``, ``no queries in reply``.
    """
    text = reply.strip()
    if not text:
        return [], "empty reply"
    fenced = _FENCE.match(text)
    if fenced:
        text = fenced.group(1).strip()
    if text[:1] in "[{":
        try:
            obj = json.loads(text)
        except ValueError:
            return [], "invalid JSON reply"
        queries = _from_json(obj)
        if queries is None:
            return [], "JSON without a query list"
        queries = [q for q in (_clean(q) for q in queries) if q]
        return (queries, None) if queries else ([], "no queries in reply")
    lines = [ln for ln in text.splitlines() if ln.strip()]
    marked = [ln for ln in lines if _MARKER.match(ln)]
    chosen = [_MARKER.sub("", ln, count=1) for ln in marked] if marked else lines
    queries = [q for q in (_clean(q) for q in chosen) if q and not q.endswith(":")]
    return (queries, None) if queries else ([], "no queries in reply")
