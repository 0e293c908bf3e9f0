"""Turn an LLM's free text into catalog items: extract title lines, then ground each through the Catalog.

Real outputs are messy: chatty preambles ("Based on the user's preference ... here are three:"), numbered lists
("1.", "2)", "#3"), bullets ("-", "*", "•"), markdown bold, quoted titles, "Title (Year) Genres: ..." or
"Title (Year) - because ..." on one line, "Genres: ..." on lines of their own, closing remarks, and bare titles on
lines of their own ("The Matrix"). We keep a line when it is a list entry, when it carries a "(YYYY)" year, or (given
a catalog) when the whole line is a catalog title after normalisation; from it we take the text up to and including
the first year, else the text before a separator (" - ", ":", " — ", "Genres"). Other unlisted lines are prose and
dropped. Nothing is guessed beyond that: a title the catalog does not name (:meth:`Catalog.ground`: sequels, remakes,
other subtitles are other films) is counted as *ungrounded* (the hallucination rate) and never ranked; a title that
names several catalog films equally (no year to decide) is *ambiguous*: not ranked, not a hallucination either.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from dualrec.data.catalog import Catalog, Grounded, match_key

_LIST_MARK = re.compile(r"^\s*(?:(?:#?\d{1,2}\s*[.):\]]|[-*•·+–—]|\(\d{1,2}\))\s*)+")
_TITLE_WITH_YEAR = re.compile(r"^(?P<title>.+?\(\s*(?:19|20)\d{2}\s*\))")
_SEPARATORS = re.compile(r"\s+[-–—|]\s+|:\s|\s+Genres?\b|\s+\[", re.IGNORECASE)
_NOT_TITLES = re.compile(r"^(?:genres?|genre\(s\)|why|reason|because|note|description|year|director|"
                         r"starring|rating|summary|plot)\b", re.IGNORECASE)
_MARKUP = re.compile(r"</?[a-zA-Z][^<>]*>|[*_`]+")  # markdown emphasis and HTML tags ("<i>Heat</i>")
_QUOTES = "\"'“”‘’«»"
MAX_TITLE_WORDS = 14


def extract_titles(text: str | None, limit: int | None = None, truncated: bool = False,
                   catalog: Catalog | None = None) -> list[str]:
    """Title strings in the order the LLM wrote them, duplicates (same match key) dropped. ``truncated``: the text
    was cut by the token limit, so its last line is partial ("- The Last") and is ignored. ``catalog``: also keep an
    unlisted line without a year when it is exactly a catalog title ("The Matrix"), which is not prose."""
    if not text:
        return []
    out: list[str] = []
    seen: set[str] = set()
    lines = text.splitlines()
    if truncated and lines and not text.endswith("\n"):
        lines = lines[:-1]
    for raw in lines:
        line = _MARKUP.sub("", raw).strip()
        if not line:
            continue
        listed = bool(_LIST_MARK.match(line))
        body = _LIST_MARK.sub("", line).strip()
        if not body or _NOT_TITLES.match(body):
            continue
        m = _TITLE_WITH_YEAR.match(body)
        if m:
            title = m.group("title")
        elif listed:
            title = _before_remark(body)
        elif catalog is not None and catalog.is_exact_title(_clean(body)):
            title = body
        else:
            continue  # prose without a year: a preamble or a remark
        title = _clean(title)
        if not title or len(title.split()) > MAX_TITLE_WORDS or title.endswith(":"):
            continue
        key = match_key(title)
        if key and key not in seen:
            seen.add(key)
            out.append(title)
            if limit and len(out) >= limit:
                break
    return out


def end_of_titles(text: str | None, n: int) -> int | None:
    """Where the answer is complete: the index just past the newline that ends the line holding the ``n``-th
    distinct title (as :func:`extract_titles` counts them), or None while fewer than ``n`` are complete. Backends
    stop generating there (``SamplingParams.max_titles``): the prompt asks for ``n`` titles, and every token after
    them is time spent on text the pipeline would not rank."""
    if not text or n <= 0:
        return None
    end = 0
    for line in text.splitlines(keepends=True):
        if not line.endswith(("\n", "\r")):
            return None  # the last line is still being written
        end += len(line)
        if extract_titles(line) and len(extract_titles(text[:end], limit=n)) >= n:
            return end
    return None


def _before_remark(body: str) -> str:
    """A listed line without a year: the title ends at the first separator that starts a remark ("Vertigo — Hitchcock
    at his best", "Heat: a crime epic"); a separator followed by Title Case words is a subtitle and stays
    ("Star Wars: Return of the Jedi", "Die Hard: Vengeance Returns", which must not ground as "Die Hard")."""
    for m in _SEPARATORS.finditer(body):
        rest = body[m.end():]
        if m.group(0).strip().lower().startswith(("genre", "[")) or not _title_case(rest):
            return body[: m.start()]
    return body


def _title_case(text: str) -> bool:
    words = re.findall(r"[^\W_]+", text)
    if not words or len(words) > 8 or not (words[0][0].isupper() or words[0][0].isdigit()):
        return False
    return all(w[0].isupper() or w[0].isdigit() for w in words if len(w) >= 4)


def _clean(title: str) -> str:
    # '"Tarzan" (1999)' -> 'Tarzan (1999)'
    title = re.sub(r"^\s*[" + _QUOTES + r"](.+?)[" + _QUOTES + r"]\s*(\(\s*\d{4}\s*\))\s*$", r"\1 \2", title)
    title = title.strip().strip(_QUOTES).strip()
    title = re.sub(r"\s*\(\s*(\d{4})\s*\)", r" (\1)", title)
    return re.sub(r"\s+", " ", title).strip(" ,;.")


@dataclass
class ParsedOutput:
    """Grounded items (catalog ids, in the LLM's order, not in the history, no duplicates) and what was lost."""

    titles: list[str]
    items: list[int]
    ungrounded: list[str] = field(default_factory=list)
    in_history: list[str] = field(default_factory=list)
    duplicates: int = 0
    ambiguous: list[str] = field(default_factory=list)
    grounded: list[Grounded] = field(default_factory=list)


def ground_titles(titles: list[str], catalog: Catalog, history: np.ndarray, min_score: float = 80.0) -> ParsedOutput:
    """Ground each title (Catalog.ground_many, one vectorised call). A title naming a movie of the user's history is
    real but not a recommendation: it is reported in ``in_history``, not as a hallucination; so is a title that
    names several catalog films equally (``ambiguous``). ``grounded`` keeps every decision with its ``why``."""
    grounded = catalog.ground_many(titles, min_score=min_score)
    hist = set(int(i) for i in history)
    items: list[int] = []
    out = ParsedOutput(titles, items, grounded=grounded)
    for g in grounded:
        if g.ambiguous:
            out.ambiguous.append(g.text)
        elif g.item is None:
            out.ungrounded.append(g.text)
        elif g.item in hist:
            out.in_history.append(g.text)
        elif g.item in items:
            out.duplicates += 1
        else:
            items.append(g.item)
    return out


def parse_and_ground(text: str | None, catalog: Catalog, history: np.ndarray, limit: int | None = None,
                     min_score: float = 80.0, truncated: bool = False) -> ParsedOutput:
    return ground_titles(extract_titles(text, limit, truncated, catalog), catalog, history, min_score)
