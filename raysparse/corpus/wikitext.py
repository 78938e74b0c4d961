"""MediaWiki wikitext -> prose, through ``mwparserfromhell``'s parse tree, and the passage splitter.

The parser gives templates, links, tags, tables, comments and headings as nodes (nested templates, ``|`` inside links
and template arguments, unbalanced markup handled by a maintained tokenizer); :func:`strip_markup` walks that tree
and keeps prose:

- text, HTML entities (decoded), bold/italic contents, contents of inline HTML tags (``<span>``, ``<small>``, ...);
- internal links as their label (``[[수도 (도시)|수도]]`` -> ``수도``; file, category, special and interlanguage links
  go), external links as their label (bare URLs go);
- templates that carry prose: language/inline templates (:data:`INLINE_TEMPLATES`, ``lang-xx``: last positional
  argument), date templates (:data:`DATE_TEMPLATES`: ``{{출생일|1950|1|1}}`` / ``{{birth date and age|1950|1|1}}``
  -> ``1950년 1월 1일``; no age, which depends on the day the dump is read), interlanguage-link templates
  (:data:`FIRST_ARG_TEMPLATES`: their first argument) and ``{{convert|5|km}}`` -> ``5 km``; every other template
  (infoboxes, navigation boxes, citations, parser functions) is dropped with its arguments;
- dropped: references, comments, tables, galleries, math and the other non-prose tags, behaviour switches
  (``__TOC__``).

Headings become section boundaries: :func:`clean_wikitext` returns ``[(heading, [paragraph, ...]), ...]`` and
:func:`split_passages` packs the paragraphs of one section into passages of at most ``max_chars`` characters,
splitting long paragraphs at sentence boundaries.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import mwparserfromhell
from mwparserfromhell.nodes import (
    Argument,
    Comment,
    ExternalLink,
    Heading,
    HTMLEntity,
    Node,
    Tag,
    Template,
    Text,
    Wikilink,
)
from mwparserfromhell.wikicode import Wikicode

#: Bump when the cleaner's output changes: the Wikipedia cache key includes it, so old caches are not reused.
CLEANER_VERSION = "3"

# Inline templates whose last positional argument is prose (language tags, no-wrap spans).
INLINE_TEMPLATES = {
    "lang",
    "llang",
    "nowrap",
    "nobr",
    "small",
    "big",
    "ruby",
    "언어",
    "괄호",
    "작은글씨",
    "큰글씨",
}
_LANG_TEMPLATE = re.compile(r"^lang-[a-z]{2,3}$")
# Date templates (Korean and English names as used on Korean Wikipedia): year|month|day -> "YYYY년 M월 D일".
DATE_TEMPLATES = {
    "출생일",
    "사망일",
    "출생일과 나이",
    "사망일과 나이",
    "birth date",
    "death date",
    "birth date and age",
    "death date and age",
    "birth-date",
    "death-date",
    "start date",
    "end date",
    "start date and age",
    "날짜",
}
# Templates whose first positional argument is the prose (interlanguage links, romanisation helpers).
FIRST_ARG_TEMPLATES = {
    "ill",
    "illm",
    "interlanguage link",
    "interlanguage link multi",
    "nihongo",
    "llink",
    "링크",
}
_CONVERT_TEMPLATES = {"convert", "cvt", "변환"}

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
# Tags whose content is not prose (markup languages of their own, galleries, references, tables).
_DROP_TAGS = {
    "ref",
    "references",
    "gallery",
    "timeline",
    "math",
    "chem",
    "syntaxhighlight",
    "source",
    "score",
    "graph",
    "mapframe",
    "templatedata",
    "imagemap",
    "hiero",
    "inputbox",
    "categorytree",
    "table",
    "hr",
    "noinclude",
    "templatestyles",
}
_LIST_MARKUP = {"li", "dt", "dd"}  # "*", "#", ";", ":" at a line start
_MAGIC = re.compile(r"__[A-Z]+__")
_QUOTES = re.compile(r"'{2,5}")  # unbalanced bold/italic quotes the parser left as text
_HEADING = re.compile(r"^(={1,6})\s*(.*?)\s*\1\s*$")
_SPACES = re.compile(r"[ \t\u00a0\u3000]+")
# Sentence ends: ., !, ?, 。 followed by space (Korean declaratives end in "다." so "." covers them).
_SENTENCE_END = re.compile(r"(?<=[.!?。])\s+")


def _name(template: Template) -> str:
    return str(template.name).strip().lower().replace("_", " ")


def _positional(template: Template) -> list[Wikicode]:
    return [p.value for p in template.params if not p.showkey]


def _date(args: list[str]) -> str:
    """``[year, month, day]`` (any prefix of it, ``df=``-style named arguments already removed) -> Korean date."""
    parts = [a.strip() for a in args[:3] if a.strip()]
    if not parts or not parts[0].lstrip("-").isdigit():
        return " ".join(parts)
    units = ("년", "월", "일")
    return " ".join(f"{int(p)}{unit}" if p.isdigit() else p for p, unit in zip(parts, units, strict=False))


def _template(template: Template) -> str:
    name = _name(template)
    positional = _positional(template)
    if (name in INLINE_TEMPLATES or _LANG_TEMPLATE.match(name)) and positional:
        return _render(positional[-1])
    if name in DATE_TEMPLATES:
        return _date([_render(v) for v in positional])
    if name in FIRST_ARG_TEMPLATES and positional:
        return _render(positional[0])
    if name in _CONVERT_TEMPLATES and len(positional) >= 2:
        return f"{_render(positional[0]).strip()} {_render(positional[1]).strip()}"
    return ""


def _link(link: Wikilink) -> str:
    target = str(link.title).strip()
    prefix = target.lstrip(":").split(":", 1)[0].strip().lower() if ":" in target else ""
    if prefix in _DROP_LINK_PREFIXES or _INTERLANGUAGE.match(target):
        return ""
    if link.text is not None:
        return _render(link.text).strip()
    return target.lstrip(":").split("#", 1)[0] or target.split("#", 1)[-1]


def _tag(tag: Tag) -> str:
    name = str(tag.tag).strip().lower()
    if name in _DROP_TAGS:
        return ""
    if name == "br":
        return " "  # a line break separates words: dropping it would glue them together
    if name in _LIST_MARKUP and tag.wiki_markup:
        return tag.wiki_markup  # the line still starts with its list marker (a paragraph of its own)
    if tag.contents is None:
        return ""
    return _render(tag.contents)


def _node(node: Node) -> str:
    if isinstance(node, Text):
        return node.value
    if isinstance(node, Wikilink):
        return _link(node)
    if isinstance(node, Template):
        return _template(node)
    if isinstance(node, Tag):
        return _tag(node)
    if isinstance(node, HTMLEntity):
        return node.normalize()
    if isinstance(node, ExternalLink):
        return _render(node.title) if node.brackets and node.title is not None else ""
    if isinstance(node, Heading):
        bar = "=" * node.level
        return f"{bar} {_render(node.title).strip()} {bar}"
    if isinstance(node, (Comment, Argument)):
        return ""
    return ""


def _render(code: Wikicode) -> str:
    return "".join(_node(node) for node in code.nodes)


def strip_markup(text: str) -> str:
    """Wikitext -> plain text with line structure kept (headings and paragraph breaks still in place)."""
    plain = _render(mwparserfromhell.parse(text))
    return _QUOTES.sub("", _MAGIC.sub("", plain))


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
