"""Wikipedia dumps -> passages Parquet in the corpus schema, cached by the dumps' checksum, parallel over shards.

Inputs, in the formats users download or produce:

* MediaWiki XML exports (``*-pages-articles.xml.bz2``, multistream, or the split shards
  ``*-pages-articles1.xml-p1p41242.bz2``), streamed through ``bz2`` + ``ElementTree.iterparse`` so a dump never has to
  fit in memory. Non-article namespaces, redirects and disambiguation pages are skipped and counted by reason.
* WikiExtractor output: ``--json`` files (one ``{"id","url","title","text"}`` object a line) or the default
  ``<doc id=.. url=.. title=..>`` files, named ``wiki_00`` inside ``AA/``, ``AB/``, ... (``.bz2`` or plain).

Each input file is one shard. :func:`parse_file` is the plain core (one file, this process); :func:`build_wikipedia`
hashes the inputs, returns the cached Parquet when the same inputs were parsed with the same settings before, and
otherwise parses every shard (on Ray Data, one task per shard, or in this process) and merges the shard files.

Output columns: the :data:`~raysparse.schemas.CORPUS` columns (``doc_id`` = ``{page_id}-{passage_no}``, ``title``,
``text``, ``date`` = revision timestamp or null, ``lang``) then ``page_id``, ``passage_no``, ``section`` and
``content_hash`` (sha1 of the normalised text, 16 hex digits: equal passages in two dumps share it).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import shutil
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from raysparse.config import CorpusConfig
from raysparse.corpus.wikitext import CLEANER_VERSION, clean_wikitext, split_passages
from raysparse.data.common import detect_lang, get_field, iter_jsonl, normalize_text, open_binary, parse_date
from raysparse.data.errors import DataFormatError
from raysparse.schemas import CORPUS, QRELS, QUERIES, ReadReport, RetrievalData

log = logging.getLogger("raysparse.corpus")

#: Bump when the output layout changes (columns, id scheme); part of the cache key with CLEANER_VERSION.
FORMAT_VERSION = "1"

PASSAGES = pa.schema(
    [
        *CORPUS,
        pa.field("page_id", pa.string(), nullable=False),
        pa.field("passage_no", pa.int32(), nullable=False),
        pa.field("section", pa.string()),
        pa.field("content_hash", pa.string(), nullable=False),
    ]
)

_WRITE_BATCH = 2000  # rows per Parquet write: a shard's passages never all sit in memory
_WIKIEXTRACTOR_NAME = re.compile(r"^wiki_\d+(\.bz2|\.gz|\.xz)?$")
_DOC_OPEN = re.compile(r"^<doc\s+([^>]*)>\s*$")
_DOC_ATTR = re.compile(r'(\w+)="([^"]*)"')
_SUMS_LINE = re.compile(r"^([0-9a-fA-F]{32}|[0-9a-fA-F]{40})\s+\*?(.+?)\s*$")


# ----------------------------------------------------------------------------------------------------------- inputs
def _open_text(path: Path) -> IO[str]:
    """Text stream of a plain, bz2 (multistream included), gzip or xz file."""
    return io.TextIOWrapper(open_binary(path), encoding="utf-8-sig")


def _open_binary(path: Path) -> IO[bytes]:
    return open_binary(path)


def sniff_format(path: Path) -> str:
    """``"xml"`` (MediaWiki export), ``"jsonl"`` (WikiExtractor --json) or ``"doc"`` (WikiExtractor default)."""
    try:
        with _open_binary(path) as fh:
            head = fh.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
    except (OSError, EOFError) as err:
        raise DataFormatError(f"{path}: cannot read ({err})") from None
    if head.startswith(b"<doc"):
        return "doc"
    if head.startswith(b"<"):
        return "xml"
    if head.startswith(b"{") or not head:
        return "jsonl"
    raise DataFormatError(
        f"{path}: not a MediaWiki XML dump nor WikiExtractor output (starts with {head[:20]!r})"
    )


def discover_inputs(paths: list[str | Path]) -> list[Path]:
    """Files to parse, sorted: given files as they are, directories searched for dumps and WikiExtractor files.

    In a directory: ``*.xml``/``*.xml.bz2``/``*.xml-p*.bz2`` dump files and ``wiki_NN``(``.bz2``) files in any
    subdirectory (WikiExtractor's ``AA/``, ``AB/``), plus ``*.jsonl``/``*.jsonl.bz2``.
    """
    files: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_file():
            files.append(p)
        elif p.is_dir():
            found = [
                f
                for f in p.rglob("*")
                if f.is_file()
                and (
                    _WIKIEXTRACTOR_NAME.match(f.name)
                    or ".xml" in f.name
                    or f.name.endswith((".jsonl", ".jsonl.bz2", ".jsonl.gz", ".jsonl.xz"))
                )
            ]
            if not found:
                raise FileNotFoundError(
                    f"{p}: no Wikipedia dump (*.xml*) or WikiExtractor (wiki_NN) files inside"
                )
            files.extend(found)
        else:
            raise FileNotFoundError(f"{p}: no such file or directory (Wikipedia dump input)")
    unique = sorted({f.resolve() for f in files})
    if not unique:
        raise FileNotFoundError("no Wikipedia input files given")
    return unique


# ---------------------------------------------------------------------------------------------- checksum and key
def read_checksums(path: str | Path) -> dict[str, str]:
    """An official ``*-sha1sums.txt`` / ``*-md5sums.txt`` -> ``{file name: hex digest}``; bad lines are errors."""
    p = Path(path)
    sums: dict[str, str] = {}
    with p.open(encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, 1):
            if not line.strip():
                continue
            match = _SUMS_LINE.match(line.strip())
            if not match:
                raise DataFormatError(f"{p} line {line_no}: expected '<sha1 or md5 hex>  <file name>'")
            sums[Path(match.group(2)).name] = match.group(1).lower()
    return sums


def hash_inputs(files: list[Path], checksums: dict[str, str] | None = None, source: str = "") -> str:
    """sha256 over every file's bytes (streamed, in order); verifies ``checksums`` in the same pass.

    With ``checksums``, every input must be listed and match; a mismatch raises naming the file and both digests.
    """
    total = hashlib.sha256()
    for f in files:
        expected = checksums.get(f.name) if checksums is not None else None
        if checksums is not None and expected is None:
            raise DataFormatError(f"{f}: not listed in the checksum file {source}")
        check = hashlib.sha1() if expected and len(expected) == 40 else hashlib.md5() if expected else None
        digest = hashlib.sha256()
        with f.open("rb") as fh:
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
                if check is not None:
                    check.update(chunk)
        if check is not None and check.hexdigest() != expected:
            raise DataFormatError(
                f"{f}: checksum mismatch against {source}: expected {check.name} {expected}, "
                f"got {check.hexdigest()} (corrupt or partial download?)"
            )
        total.update(f.name.encode() + b"\0" + digest.digest())
    return total.hexdigest()


def config_key(cfg: CorpusConfig) -> str:
    """Hash of everything that changes the parsed output: versions and the parsing settings (not where or how many
    workers run: cache_dir, num_workers, resources)."""
    relevant = cfg.model_dump(exclude={"cache_dir", "num_workers", "resources"})
    blob = json.dumps({"format": FORMAT_VERSION, "cleaner": CLEANER_VERSION, **relevant}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


# ------------------------------------------------------------------------------------------------------- pages
@dataclass
class Page:
    """One page as read from a dump (wikitext) or WikiExtractor (plain text, ``markup=False``)."""

    page_id: str
    title: str
    text: str
    ns: int = 0
    redirect: bool = False
    date: datetime | None = None
    markup: bool = True
    lang: str | None = None  # the wiki's language (<mediawiki xml:lang="ko">) when the input says it


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _timestamp(value: str | None, where: str) -> datetime | None:
    """MediaWiki's ``2024-01-01T12:00:00Z`` -> naive UTC; the general parser only for other spellings."""
    if value and value.endswith("Z"):
        try:
            return datetime.fromisoformat(value[:-1])
        except ValueError:
            pass
    return parse_date(value, where, "timestamp")


def iter_xml_pages(path: Path) -> Iterator[Page]:
    """Pages of a MediaWiki XML export (any export-0.x schema version), streamed; memory stays flat.

    Malformed XML raises :class:`DataFormatError` naming the file, the line/column in the (decompressed) XML and the
    last page read; a page without ``<id>`` or ``<title>`` raises naming the page and the missing field.
    """
    last = "before the first page"
    try:
        with _open_binary(path) as fh:
            context = ET.iterparse(fh, events=("start", "end"))
            root = None
            lang = None
            for event, elem in context:
                if root is None:
                    root = elem
                    if _local(root.tag) != "mediawiki":
                        raise DataFormatError(
                            f"{path}: root element is <{_local(root.tag)}>, not <mediawiki>"
                        )
                    lang = root.attrib.get("{http://www.w3.org/XML/1998/namespace}lang") or None
                if event != "end" or _local(elem.tag) != "page":
                    continue
                fields: dict[str, Any] = {"redirect": False}
                for child in elem:
                    name = _local(child.tag)
                    if name in ("title", "ns", "id"):
                        fields[name] = (child.text or "").strip()
                    elif name == "redirect":
                        fields["redirect"] = True
                    elif name == "revision":
                        for rev in child:
                            rname = _local(rev.tag)
                            if rname == "text":
                                fields["text"] = rev.text or ""
                            elif rname == "timestamp":
                                fields["timestamp"] = (rev.text or "").strip()
                where = f"{path} page {fields.get('title')!r} (id {fields.get('id')})"
                for required in ("title", "id"):
                    if not fields.get(required):
                        raise DataFormatError(f"{where}, after {last}: <{required}> is missing or empty")
                try:
                    ns = int(fields.get("ns") or 0)
                except ValueError:
                    raise DataFormatError(f"{where}: <ns> is not an integer: {fields['ns']!r}") from None
                yield Page(
                    page_id=fields["id"],
                    title=fields["title"],
                    text=fields.get("text", ""),
                    ns=ns,
                    redirect=fields["redirect"],
                    date=_timestamp(fields.get("timestamp"), where),
                    lang=lang,
                )
                last = f"page {fields['title']!r} (id {fields['id']})"
                root.clear()  # drop the pages already read: memory stays flat over a multi-GB dump
    except ET.ParseError as err:
        line, col = err.position
        raise DataFormatError(
            f"{path}: malformed XML at line {line} column {col} of the decompressed XML, after {last}: {err}"
        ) from None
    except (OSError, EOFError) as err:  # truncated / corrupt bz2
        raise DataFormatError(f"{path}: cannot decompress or read (after {last}): {err}") from None


def iter_extractor_json(path: Path) -> Iterator[Page]:
    """WikiExtractor ``--json`` lines; a line that is not a JSON object or lacks a field raises naming file/line."""
    try:
        for where, rec in iter_jsonl(path):
            yield Page(
                page_id=get_field(rec, "id", where),
                title=get_field(rec, "title", where),
                text=get_field(rec, "text", where),
                markup=False,
            )
    except UnicodeDecodeError as err:
        raise DataFormatError(f"{path}: not UTF-8 text ({err.reason})") from None
    except (OSError, EOFError) as err:
        raise DataFormatError(f"{path}: cannot decompress or read: {err}") from None


def iter_extractor_doc(path: Path) -> Iterator[Page]:
    """WikiExtractor's default ``<doc id url title>`` ... ``</doc>`` files (first body line repeats the title)."""
    try:
        with _open_text(path) as fh:
            attrs: dict[str, str] | None = None
            body: list[str] = []
            start = 0
            for line_no, line in enumerate(fh, 1):
                opening = _DOC_OPEN.match(line.strip())
                if opening:
                    if attrs is not None:
                        raise DataFormatError(
                            f"{path} line {line_no}: <doc> opened before line {start}'s closed"
                        )
                    attrs, body, start = dict(_DOC_ATTR.findall(opening.group(1))), [], line_no
                elif line.strip() == "</doc>":
                    if attrs is None:
                        raise DataFormatError(f"{path} line {line_no}: </doc> without an opening <doc>")
                    where = f"{path} line {start}"
                    yield Page(
                        page_id=get_field(attrs, "id", where),
                        title=get_field(attrs, "title", where),
                        text="".join(body),
                        markup=False,
                    )
                    attrs = None
                elif attrs is not None:
                    body.append(line)
            if attrs is not None:
                raise DataFormatError(f"{path} line {start}: <doc> never closed (truncated file?)")
    except UnicodeDecodeError as err:
        raise DataFormatError(f"{path}: not UTF-8 text ({err.reason})") from None
    except (OSError, EOFError) as err:
        raise DataFormatError(f"{path}: cannot decompress or read: {err}") from None


def iter_pages(path: Path) -> Iterator[Page]:
    """Pages of one input file, whatever its format (see :func:`sniff_format`)."""
    fmt = sniff_format(path)
    if fmt == "xml":
        return iter_xml_pages(path)
    if fmt == "doc":
        return iter_extractor_doc(path)
    return iter_extractor_json(path)


# --------------------------------------------------------------------------------------------------- passages
def _is_disambiguation(page: Page, cfg: CorpusConfig) -> bool:
    title = page.title.lower()
    if title.endswith(("(동음이의)", "(disambiguation)")):
        return True
    if not page.markup:
        return False
    names = "|".join(re.escape(n) for n in cfg.disambiguation_templates)
    return re.search(r"\{\{\s*(?:" + names + r")\s*[|}]", page.text, re.I) is not None


def page_passages(page: Page, cfg: CorpusConfig, report: ReadReport) -> list[dict[str, Any]]:
    """The passage rows of one page (``[]`` for a skipped page; the reason is counted in ``report``)."""
    if page.ns not in cfg.namespaces:
        report.skip("page: non-article namespace")
        return []
    if page.redirect or (page.markup and re.match(r"\s*#(redirect|넘겨주기)\b", page.text, re.I)):
        report.skip("page: redirect")
        return []
    if cfg.skip_disambiguation and _is_disambiguation(page, cfg):
        report.skip("page: disambiguation")
        return []
    if page.markup:
        sections = clean_wikitext(page.text, cfg.drop_sections)
    else:
        paragraphs = [p.strip() for p in re.split(r"\n\s*\n|\n", page.text) if p.strip()]
        if paragraphs and paragraphs[0] == page.title.strip():
            paragraphs = paragraphs[1:]  # WikiExtractor repeats the title as the first line
        sections = [("", paragraphs)] if paragraphs else []
    rows: list[dict[str, Any]] = []
    short = 0
    for heading, paragraphs in sections:
        for text in split_passages(paragraphs, cfg.passage_max_chars):
            if len(text) < cfg.passage_min_chars:
                short += 1
                continue
            rows.append(
                {
                    "doc_id": f"{page.page_id}-{len(rows)}",
                    "title": page.title,
                    "text": text,
                    "date": page.date,
                    "lang": cfg.lang or page.lang or detect_lang(text),
                    "page_id": page.page_id,
                    "passage_no": len(rows),
                    "section": heading or None,
                    "content_hash": hashlib.sha1(normalize_text(text).encode("utf-8")).hexdigest()[:16],
                }
            )
    if short:
        report.skip("passage: shorter than corpus.passage_min_chars", short)
    if not rows:
        report.skip("page: no text after cleaning")
    report.read += len(rows)
    return rows


def iter_file_passages(path: Path, cfg: CorpusConfig, report: ReadReport) -> Iterator[dict[str, Any]]:
    """Passage rows of one input file, page by page; ``report.read`` counts passages, skips count pages/passages."""
    for page in iter_pages(path):
        yield from page_passages(page, cfg, report)


def parse_file(path: str | Path, cfg: CorpusConfig) -> tuple[pa.Table, ReadReport]:
    """The plain core: one input file -> (passages table in :data:`PASSAGES` schema, report). In memory."""
    p = Path(path)
    report = ReadReport(str(p))
    rows = list(iter_file_passages(p, cfg, report))
    return pa.Table.from_pylist(rows, schema=PASSAGES), report


def parse_to_parquet(
    path: str | Path, cfg: CorpusConfig, out_path: str | Path, show_progress: bool = False
) -> ReadReport:
    """One input file -> a Parquet file, written in batches (a shard never sits in memory whole)."""
    from tqdm.auto import tqdm

    p = Path(path)
    report = ReadReport(str(p))
    batch: list[dict[str, Any]] = []
    pages = tqdm(iter_pages(p), desc=p.name, unit="page", disable=not show_progress, leave=False)
    with pq.ParquetWriter(str(out_path), PASSAGES) as writer:
        for row in (r for page in pages for r in page_passages(page, cfg, report)):
            batch.append(row)
            if len(batch) >= _WRITE_BATCH:
                writer.write_table(pa.Table.from_pylist(batch, schema=PASSAGES))
                batch = []
        if batch:
            writer.write_table(pa.Table.from_pylist(batch, schema=PASSAGES))
    return report


def _report_to_dict(report: ReadReport) -> dict[str, Any]:
    return {"source": report.source, "read": report.read, "skipped": dict(report.skipped)}


def _report_from_dict(d: dict[str, Any]) -> ReadReport:
    return ReadReport(d["source"], d["read"], dict(d["skipped"]))


def _shard_task(batch: dict[str, Any], cfg_json: str) -> dict[str, Any]:
    """Ray Data ``map_batches`` body: parse the shards of the batch, each into its own part file."""
    cfg = CorpusConfig.model_validate_json(cfg_json)
    reports = []
    for src, dst in zip(list(batch["path"]), list(batch["part"]), strict=True):
        reports.append(json.dumps(_report_to_dict(parse_to_parquet(src, cfg, dst))))
    return {"path": list(batch["path"]), "report": reports}


# ------------------------------------------------------------------------------------------------------ build
@dataclass
class WikipediaBuild:
    """What :func:`build_wikipedia` did: ``cached`` is true when nothing was parsed."""

    output: str
    cached: bool
    key: str
    inputs: list[str]
    passages: int
    pages_kept: int
    skipped: dict[str, int]
    duplicate_ids: int = 0
    mode: str = "in-process"
    timings: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False, indent=2)


def _merge_parts(parts: list[Path], out_path: Path) -> tuple[int, int, int]:
    """Concatenate shard files in input order, dropping (and counting) doc ids already seen in an earlier shard."""
    seen: set[str] = set()
    rows = duplicates = 0
    pages: set[str] = set()
    with pq.ParquetWriter(str(out_path), PASSAGES) as writer:
        for part in parts:
            for batch in pq.ParquetFile(part).iter_batches(batch_size=_WRITE_BATCH):
                # Parquet stores timestamp[s] as ms: cast back to the declared schema.
                table = pa.Table.from_batches([batch]).cast(PASSAGES)
                ids = table["doc_id"].to_pylist()
                keep = [i not in seen for i in ids]
                seen.update(ids)
                duplicates += keep.count(False)
                if not all(keep):
                    table = table.filter(pa.array(keep))
                pages.update(table["page_id"].to_pylist())
                rows += table.num_rows
                writer.write_table(table)
    return rows, duplicates, len(pages)


def build_wikipedia(
    inputs: list[str | Path],
    cfg: CorpusConfig,
    *,
    ray: bool = True,
    checksums: str | Path | None = None,
    force: bool = False,
    show_progress: bool = True,
) -> WikipediaBuild:
    """Parse Wikipedia inputs into ``<cache_dir>/<inputs sha256>-<config hash>/passages.parquet`` (once).

    ``ray=True`` parses the shards on Ray Data (one task per input file, ``corpus.num_workers`` at a time; the
    cache directory must be shared storage on a multi-node cluster); ``ray=False`` parses them here, one after the
    other. Both produce the same file. ``checksums``: an official ``*-sha1sums.txt``/``*-md5sums.txt`` every input
    is verified against. ``force`` re-parses even when the cache holds the output.
    """
    files = discover_inputs(list(inputs))
    t0 = time.perf_counter()
    sums = read_checksums(checksums) if checksums else None
    key = f"{hash_inputs(files, sums, str(checksums))[:24]}-{config_key(cfg)}"
    hash_s = time.perf_counter() - t0
    # Absolute: Ray workers write the part files and need not share the driver's working directory.
    target_dir = Path(cfg.cache_dir).resolve() / key
    out_path = target_dir / "passages.parquet"
    report_path = target_dir / "build.json"
    if out_path.is_file() and report_path.is_file() and not force:
        build = WikipediaBuild(**json.loads(report_path.read_text(encoding="utf-8")))
        build.cached = True
        build.timings = {"hash": hash_s}
        log.info("wikipedia: cache hit %s (%d passages)", out_path, build.passages)
        return build

    # Parse into a staging directory and rename at the end: an interrupted run never leaves a half cache entry.
    staging = target_dir.with_name(f"{key}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    (staging / "parts").mkdir(parents=True)
    parts = [staging / "parts" / f"part-{i:05d}.parquet" for i in range(len(files))]
    t1 = time.perf_counter()
    try:
        if ray:
            reports = _parse_with_ray(files, parts, cfg)
        else:
            reports = _parse_in_process(files, parts, cfg, show_progress)
        parse_s = time.perf_counter() - t1
        t2 = time.perf_counter()
        rows, duplicates, pages_kept = _merge_parts(parts, staging / "passages.parquet")
        merge_s = time.perf_counter() - t2
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    total = ReadReport("wikipedia")
    for r in reports:
        total.read += r.read
        for reason, n in r.skipped.items():
            total.skip(reason, n)
    if duplicates:
        total.skip("passage: duplicate doc id across shards", duplicates)
    for r in reports:
        log.info("%s", r)
    build = WikipediaBuild(
        output=str(out_path),
        cached=False,
        key=key,
        inputs=[str(f) for f in files],
        passages=rows,
        pages_kept=pages_kept,
        skipped=dict(sorted(total.skipped.items())),
        duplicate_ids=duplicates,
        mode="ray" if ray else "in-process",
        timings={"hash": hash_s, "parse": parse_s, "merge": merge_s},
    )
    shutil.rmtree(staging / "parts")
    (staging / "build.json").write_text(build.to_json(), encoding="utf-8")
    if target_dir.exists():  # force=True over an existing entry
        shutil.rmtree(target_dir)
    staging.rename(target_dir)
    return build


def _parse_in_process(
    files: list[Path], parts: list[Path], cfg: CorpusConfig, show_progress: bool
) -> list[ReadReport]:
    from tqdm.auto import tqdm

    return [
        parse_to_parquet(f, cfg, part, show_progress)
        for f, part in tqdm(
            list(zip(files, parts, strict=True)),
            desc="wikipedia shards",
            unit="file",
            disable=not show_progress,
        )
    ]


def _parse_with_ray(files: list[Path], parts: list[Path], cfg: CorpusConfig) -> list[ReadReport]:
    import ray.data

    from raysparse.ray_utils import check_placement, placement_args

    # fail (or wait for an autoscaler) up front, naming the key
    check_placement(cfg.resources, "corpus.resources")
    items = [{"path": str(f), "part": str(p)} for f, p in zip(files, parts, strict=True)]
    ds = ray.data.from_items(items, override_num_blocks=len(items))
    ds = ds.map_batches(
        _shard_task,
        batch_size=1,  # one shard per task: the unit of parallelism is a dump file
        fn_kwargs={"cfg_json": cfg.model_dump_json()},
        concurrency=cfg.num_workers or len(items),
        num_cpus=1,
        **placement_args(cfg.resources),
    )
    by_path = {row["path"]: _report_from_dict(json.loads(row["report"])) for row in ds.take_all()}
    missing = [str(f) for f in files if str(f) not in by_path]
    if missing:
        raise RuntimeError(f"Ray Data returned no result for shards {missing}")
    return [by_path[str(f)] for f in files]


def read_passages(path: str | Path) -> pa.Table:
    """A passages Parquet written here, checked against :data:`PASSAGES`."""
    table = pq.read_table(path)
    if table.schema.names[: len(CORPUS)] != CORPUS.names:
        raise DataFormatError(f"{path}: not a passages file (columns {table.schema.names})")
    return table.cast(PASSAGES)


def title_queries(passages: pa.Table) -> RetrievalData:
    """Weak supervision for a first run: each page title is a query judged against the page's first passage.

    Titles are short and appear in their page, so BM25 finds them easily: use these pairs to check the flow into
    mining/training, and synthetic queries (``raysparse generate-queries``) for a model worth shipping.
    """
    first = passages.filter(pc.equal(passages["passage_no"], 0))
    titles = first["title"].to_pylist()
    ids = first["doc_id"].to_pylist()
    queries = [
        {"query_id": f"title-{doc_id.rsplit('-', 1)[0]}", "text": title, "lang": detect_lang(title)}
        for doc_id, title in zip(ids, titles, strict=True)
        if title
    ]
    qrels = [{"query_id": q["query_id"], "doc_id": f"{q['query_id'][6:]}-0", "score": 1} for q in queries]
    return RetrievalData(
        passages.select(CORPUS.names).cast(CORPUS),
        pa.Table.from_pylist(queries, schema=QUERIES),
        pa.Table.from_pylist(qrels, schema=QRELS),
        [ReadReport("title queries", read=len(queries))],
    )
