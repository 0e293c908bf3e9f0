"""The docs' generated tables: each section's records, rendered, between markers in its page (docs/results.md,
or another page such as docs/duip.md).

A section of a page is enclosed by ``<!-- section: NAME ... -->`` and ``<!-- end: NAME -->``; inside it each
protocol's generated tables sit between ``<!-- NAME table: PROTOCOL -->`` and ``<!-- end NAME table: PROTOCOL -->``.
The text around them is written by hand and kept. :data:`SECTIONS` says which records folder each section is
rendered from, and by which function; ``dualrec table render`` re-renders them all.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from dualrec.tables import baselines, duip, llm, stage1, tradeoff

Renderer = Callable[[Path], dict[str, str]]   # a records folder -> {protocol: Markdown}


RESULTS_PAGE = "docs/results.md"


@dataclass(frozen=True)
class Section:
    name: str          # the section's name in its page
    folder: str        # its records, ``<folder>/<protocol>/*.json``, relative to the repository root
    render: Renderer
    page: str = RESULTS_PAGE   # the page it is written into, relative to the repository root


SECTIONS: tuple[Section, ...] = (
    Section("lstm", "results", stage1.render),
    Section("dualrec", "results/dualrec", llm.render),
    Section("ranker", "results", llm.render),
    Section("ranker-all-targets", "results/all-targets", llm.render),
    Section("tradeoff", "results", tradeoff.render),
    Section("baselines", "results", baselines.render),
    Section("duip", "results", duip.render),
    Section("duip-verdict", "results", duip.verdict, page="docs/duip.md"),
)


def get_section(name: str) -> Section:
    for s in SECTIONS:
        if s.name == name:
            return s
    raise ValueError(f"unknown docs section {name!r}; choose one of {[s.name for s in SECTIONS]}")


def docs_markers(protocol: str, section: str = "dualrec") -> tuple[str, str]:
    """The comments that enclose a protocol's tables of one section in results.md."""
    return f"<!-- {section} table: {protocol} -->", f"<!-- end {section} table: {protocol} -->"


def docs_block(protocol: str, text: str, section: str = "dualrec") -> str:
    """A protocol's rendered tables between its markers, as :func:`insert_blocks` puts them in a page."""
    begin, end = docs_markers(protocol, section)
    return f"{begin}\n{text.rstrip()}\n{end}"


def insert_blocks(doc: str, blocks: dict[str, str], section: str) -> str:
    """``doc`` with each rendered protocol's tables replaced between its ``<!-- SECTION table: PROTOCOL -->``
    markers inside the section (added before the section's end the first time); the other protocols' tables and
    the hand-written text stay. So one protocol can be re-run and re-rendered without the other's records."""
    for protocol, text in blocks.items():
        begin, end = docs_markers(protocol, section)
        block = docs_block(protocol, text, section)
        if f"<!-- section: {section}" not in doc:
            raise ValueError(f"the page has no section {section!r} (<!-- section: {section} ... -->)")
        section_end = doc.index(f"<!-- end: {section} -->", doc.index(f"<!-- section: {section}"))
        if begin in doc:
            doc = doc[:doc.index(begin)] + block + doc[doc.index(end) + len(end):]
        else:
            doc = doc[:section_end] + block + "\n" + doc[section_end:]
    return doc


def render_docs(root: Path, doc: str, sections: list[str] | None = None, protocol: str | None = None,
                page: str = RESULTS_PAGE) -> str:
    """``doc`` (the text of ``page``) with its ``sections`` (default all of that page's) rendered from their records
    under ``root`` (only ``protocol``'s tables when given)."""
    chosen = [get_section(n) for n in sections] if sections else SECTIONS
    for section in chosen:
        if section.page != page:
            continue
        blocks = {p: t for p, t in section.render(root / section.folder).items() if protocol in (None, p)}
        doc = insert_blocks(doc, blocks, section.name)
    return doc


def pages(sections: list[str] | None = None) -> list[str]:
    """The pages ``sections`` (default all) are written into."""
    chosen = [get_section(n) for n in sections] if sections else SECTIONS
    return list(dict.fromkeys(s.page for s in chosen))
