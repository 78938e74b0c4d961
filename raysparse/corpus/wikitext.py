"""A MediaWiki wikitext cleaner and passage splitter, written here (no wikitext parser dependency).

The cleaner keeps prose and drops what is not prose: templates (nested), tables, file/category/interlanguage links,
references, comments, HTML tags, magic words and whole navigation sections (see ``corpus.drop_sections``). Links
keep their label, bold/italic quotes go, and headings become section boundaries: :func:`clean_wikitext` returns
``[(heading, [paragraph, ...]), ...]`` and :func:`split_passages` packs the paragraphs of one section into passages
of at most ``max_chars`` characters, splitting long paragraphs at sentence boundaries.

It is a pragmatic cleaner, not a full parser: templates that carry prose are kept only for the few inline ones in
:data:`INLINE_TEMPLATES` (``{{lang|en|Apple}}`` -> ``Apple``); every other template is removed with its content.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable

#: Bump when the cleaner's output changes: the Wikipedia cache key includes it, so old caches are not reused.
CLEANER_VERSION = "2"

# Inline templates whose last positional argument is prose (language tags, no-wrap spans).
INLINE_TEMPLATES = {"lang", "llang", "nowrap", "nobr", "small", "big", "ruby", "언어", "괄호"}
_LANG_TEMPLATE = re.compile(r"^lang-[a-z]{2,3}$")

# Link prefixes that are not prose links (media, categories; English and Korean names).
_DROP_LINK_PREFIXES = {
    "file",
    "image",
    "media",
    "category",
    "파일",
    "그림",
    "분류",
    "미디어",
    "special",
    "특수",
}
_INTERLANGUAGE = re.compile(r"^:?[a-z]{2,3}(?:-[a-z]{2,8})?:")

_COMMENT = re.compile(r"<!--.*?(?:-->|$)", re.S)
_REF_SELF = re.compile(r"<ref\b[^>]*/>", re.I)
_REF = re.compile(r"<ref\b[^>]*>.*?</ref\s*>", re.I | re.S)
# Tags whose content is not prose (markup languages of their own, galleries, reference lists).
_DROP_BLOCKS = re.compile(
    r"<(gallery|timeline|math|chem|syntaxhighlight|source|score|graph|mapframe|templatedata|references|imagemap|"
    r"hiero|inputbox|categorytree)\b[^>]*>.*?</\1\s*>",
    re.I | re.S,
)
_DROP_SELF_TAGS = re.compile(r"<(references|gallery|math)\b[^>]*/>", re.I)
_NOWIKI = re.compile(r"<nowiki\s*/?>|</nowiki\s*>", re.I)
_TEMPLATE = re.compile(r"\{\{(?:(?!\{\{|\}\}).)*\}\}", re.S)  # innermost template
_TABLE = re.compile(r"\{\|(?:(?!\{\|).)*?\n\s*\|\}", re.S)  # innermost table (no table inside)
_LINK = re.compile(r"\[\[([^\[\]]*)\]\]")  # innermost internal link
_EXTERNAL = re.compile(r"\[(?:https?:|ftp:)?//[^\s\]]+(?:\s+([^\]]*))?\]", re.I)
_BARE_URL = re.compile(r"https?://\S+")
_QUOTES = re.compile(r"'{2,5}")
_BR = re.compile(r"<br\s*/?>", re.I)
_TAG = re.compile(r"</?[A-Za-z][A-Za-z0-9]*(?:\s[^<>]*)?/?>")
_MAGIC = re.compile(r"__[A-Z]+__")
_HEADING = re.compile(r"^(={1,6})\s*(.*?)\s*\1\s*$")
_SPACES = re.compile(r"[ \t\u00a0\u3000]+")
# Sentence ends: ., !, ?, 。 followed by space (Korean declaratives end in "다." so "." covers them).
_SENTENCE_END = re.compile(r"(?<=[.!?。])\s+")


def _replace_until_stable(pattern: re.Pattern[str], repl, text: str, limit: int = 50) -> str:
    """Apply ``pattern`` innermost-first until nothing changes (nesting depth is bounded by ``limit``)."""
    for _ in range(limit):
        new = pattern.sub(repl, text)
        if new == text:
            return new
        text = new
    return text


def _template(match: re.Match[str]) -> str:
    body = match.group(0)[2:-2]
    parts = [p.strip() for p in body.split("|")]
    name = parts[0].lower().replace("_", " ").strip()
    positional = [p for p in parts[1:] if "=" not in p]
    if (name in INLINE_TEMPLATES or _LANG_TEMPLATE.match(name)) and positional:
        return positional[-1]
    return ""


def _link(match: re.Match[str]) -> str:
    inner = match.group(1)
    target, _, label = inner.partition("|")
    target = target.strip()
    prefix = target.lstrip(":").split(":", 1)[0].strip().lower() if ":" in target else ""
    if prefix in _DROP_LINK_PREFIXES or _INTERLANGUAGE.match(target):
        return ""
    if label:
        # [[a|b|c]] (rare outside files): the last part is the label.
        return label.rsplit("|", 1)[-1].strip()
    return target.lstrip(":").split("#", 1)[0] or target.split("#", 1)[-1]


def strip_markup(text: str) -> str:
    """Wikitext -> plain text with line structure kept (headings and paragraph breaks still in place)."""
    text = _COMMENT.sub("", text)
    text = _REF_SELF.sub("", text)
    text = _REF.sub("", text)
    text = _DROP_BLOCKS.sub("", text)
    text = _DROP_SELF_TAGS.sub("", text)
    text = _NOWIKI.sub("", text)
    # Links before templates: a template argument may hold a piped link, whose "|" would split the template.
    text = _replace_until_stable(_LINK, _link, text)
    text = _replace_until_stable(_TEMPLATE, _template, text)
    text = _replace_until_stable(_TABLE, lambda m: "", text)
    text = _EXTERNAL.sub(lambda m: m.group(1) or "", text)
    text = _BARE_URL.sub("", text)
    text = _QUOTES.sub("", text)
    text = _BR.sub(" ", text)  # a line break separates words: dropping it would glue them together
    text = _TAG.sub("", text)
    text = _MAGIC.sub("", text)
    return html.unescape(text)


def clean_wikitext(text: str, drop_sections: Iterable[str] = ()) -> list[tuple[str, list[str]]]:
    """``[(heading, paragraphs)]``: the lead section has heading ``""``; sections in ``drop_sections`` are left out.

    A dropped section takes its subsections with it (a level-3 heading under "References" is still references).
    """
    dropped = {s.strip().lower() for s in drop_sections}
    sections: list[tuple[str, list[str]]] = [("", [])]
    skip_level = 0  # > 0 while inside a dropped section of that level
    current: list[str] = []

    def flush() -> None:
        if current:
            paragraph = _SPACES.sub(" ", " ".join(current)).strip()
            if paragraph and not skip_level:
                sections[-1][1].append(paragraph)
            current.clear()

    for raw in strip_markup(text).split("\n"):
        line = raw.strip()
        heading = _HEADING.match(line)
        if heading:
            flush()
            level, title = len(heading.group(1)), _SPACES.sub(" ", heading.group(2)).strip()
            if skip_level and level > skip_level:
                continue
            skip_level = level if title.lower() in dropped else 0
            if not skip_level:
                sections.append((title, []))
            continue
        if not line:
            flush()
            continue
        if line.startswith(("|", "!", "{|", "|}")):  # table debris the table pattern could not pair
            continue
        if line[0] in "*#:;":
            # A list item is a paragraph of its own (lists are enumerations, not running prose).
            flush()
            current.append(line.lstrip("*#:; "))
            flush()
            continue
        current.append(line)
    flush()
    return [(title, paras) for title, paras in sections if paras]


def _hard_split(text: str, max_chars: int) -> list[str]:
    """A sentence longer than ``max_chars``: cut at the last space before the limit (or at the limit)."""
    out = []
    while len(text) > max_chars:
        cut = text.rfind(" ", 0, max_chars + 1)
        cut = cut if cut > max_chars // 2 else max_chars
        out.append(text[:cut].strip())
        text = text[cut:].strip()
    if text:
        out.append(text)
    return out


def split_passages(paragraphs: list[str], max_chars: int) -> list[str]:
    """Pack paragraphs (joined by a space) into passages of at most ``max_chars`` characters.

    A paragraph that does not fit alone is split at sentence ends, and a sentence that does not fit alone at a
    space; no passage ever exceeds ``max_chars``.
    """
    pieces: list[str] = []
    for para in paragraphs:
        if len(para) <= max_chars:
            pieces.append(para)
            continue
        for sentence in _SENTENCE_END.split(para):
            pieces.extend(_hard_split(sentence, max_chars) if len(sentence) > max_chars else [sentence])
    passages: list[str] = []
    current = ""
    for piece in pieces:
        if not piece:
            continue
        if current and len(current) + 1 + len(piece) > max_chars:
            passages.append(current)
            current = piece
        else:
            current = f"{current} {piece}" if current else piece
    if current:
        passages.append(current)
    return passages
