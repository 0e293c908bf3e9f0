"""Title text and grounding: which catalog film a free-text title (an LLM's line, a user's typing) names, if any.

A fuzzy string score alone credits hallucinations: "Toy Story 4" is one character from "Toy Story 2", and a remake
with a wrong year ("Planet of the Apes (2001)") has the same words as the original. The matcher therefore knows what
makes two titles different films, and says which rule decided (:attr:`Grounded.why`):

1. **exact**: the text and a catalog title (or one of its parenthesised alternate titles) have the same key after
   normalisation: case, accents, punctuation, quotes, markdown, "&"/"and", a leading English article, roman
   numerals ("II" = "2", "Part II" = "2"). With a year, the year must be within ``year_tolerance`` (1) of the
   catalog's; a title that exists only with years farther away names another film (a remake, or a year the LLM
   made up: ``year``). When several catalog films share the title the year decides (``year-decides``); with no
   year the answer is ``ambiguous``.
2. **main-title**: the text is a catalog title without its subtitle ("Star Wars (1977)" for "Star Wars: Episode IV
   - A New Hope"); same year rules, so "Star Wars" alone is ambiguous.
3. **fuzzy**: a near spelling (rapidfuzz ``ratio`` of the keys >= ``min_score``), accepted only when the sequel
   numbers are the same (``sequel`` otherwise), every content word of each side has a close word on the other
   (``words``: a different subtitle is a different film) and the year is within tolerance (``year``). When two
   films are equally close the year decides, else ``ambiguous``.

Nothing else grounds (``no-match``). Scores are 0..100: 100 for an exact title with the right (or no) year, 5 less
for a year off by one, 95 for a main title, the fuzzy ratio otherwise; a text that grounds nothing keeps the
score of its nearest rejected candidate, for diagnostics.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
from rapidfuzz import fuzz, process

# Trailing articles MovieLens moves to the end: "Misérables, Les", "Avventura, L'".
_ARTICLES = ("The", "A", "An", "Les", "La", "Le", "L'", "Il", "El", "Das", "Der", "Die", "Den", "Det", "Lo", "Los", "Las")
_YEAR_RE = re.compile(r"\s*\((\d{4})(?:[-–]\d{0,4})?\)\s*$")
_YEAR_THEN_NOTES = re.compile(r"^(?P<name>.*?\S)\s*[(\[]\s*(?P<year>(?:18|19|20)\d{2})\s*[)\]](?P<rest>.*)$")
_ARTICLE_RE = re.compile(r"^(?P<main>.+?), (?P<art>" + "|".join(re.escape(a) for a in _ARTICLES) + r")(?P<rest>(?: \([^()]*\))*)$")
_PARENS = re.compile(r"\(([^()]*)\)")
_TRAILING_PARENS = re.compile(r"(?:\s*\([^()]*\))+\s*$")
_SUBTITLE_SEP = re.compile(r"\s*:\s+|\s*:$|\s+[-–—]\s+")
_TRAILING_DIGITS = re.compile(r"(?<=[a-z])(\d{1,2})$")
_APOSTROPHES = re.compile(r"['’`´]")
_NON_WORD = re.compile(r"[^\w\s]|_")
_AKA = re.compile(r"^\s*(?:a\.?k\.?a\.?|also known as)\s+", re.IGNORECASE)
_MARKUP = re.compile(r"</?[a-zA-Z][^<>]*>|[*_`#]+")
_QUOTES = "\"'“”‘’«»„"

_ROMAN = {"ii": 2, "iii": 3, "iv": 4, "v": 5, "vi": 6, "vii": 7, "viii": 8, "ix": 9, "x": 10, "xi": 11, "xii": 12,
          "xiii": 13, "xiv": 14, "xv": 15}
_NUMBER_WORDS = {"part", "episode", "chapter", "volume", "vol", "book"}
_LEADING_ARTICLES = ("the", "a", "an")
# Words whose absence or presence does not make another film ("Die Hard With a Vengeance" = "Die Hard: With ...").
_STOPWORDS = frozenset("the a an of and or in on at to for by with from".split())

WHY_GROUNDED = ("exact", "year-decides", "main-title", "fuzzy")
WHY_NOT = ("empty", "no-match", "year", "sequel", "words", "ambiguous", "not-allowed")


def split_year(title: str) -> tuple[str, int | None]:
    """``"Heat (1995)"`` -> ``("Heat", 1995)``; a title without a trailing year gives ``(title, None)``."""
    m = _YEAR_RE.search(title)
    if not m:
        return title.strip(), None
    return title[: m.start()].strip(), int(m.group(1))


def normalise_title(raw: str) -> str:
    """Move a trailing article to the front: ``"Matrix, The (1999)"`` -> ``"The Matrix (1999)"``.

    Alternative titles in parentheses stay where they are ("The Confessional (Le Confessionnal) (1995)"), and an
    elided article joins without a space ("Avventura, L' (1960)" -> "L'Avventura (1960)").
    """
    name, year = split_year(raw)
    m = _ARTICLE_RE.match(name)
    if m:
        art = m.group("art")
        sep = "" if art.endswith("'") else " "
        name = f"{art}{sep}{m.group('main')}{m.group('rest')}"
    return f"{name} ({year})" if year is not None else name


def _fold(text: str) -> str:
    """Lower case without accents: "Misérables" -> "miserables"."""
    text = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in text if not unicodedata.combining(ch)).lower()


def _segment_tokens(segment: str) -> list[str]:
    """One title segment (the part between subtitle separators) as canonical tokens: words, arabic numbers."""
    s = _APOSTROPHES.sub("", _fold(segment).replace("&", " and "))
    tokens = _NON_WORD.sub(" ", s).split()
    tokens = [t for tok in tokens for t in _TRAILING_DIGITS.sub(r" \1", tok).split()]  # "Alien³" = "Alien 3"
    tokens = _join_letters(tokens)  # "M*A*S*H" = "MASH", "L.A. Confidential" = "LA Confidential"
    out: list[str] = []
    for i, t in enumerate(tokens):
        prev = tokens[i - 1] if i else None
        last = i == len(tokens) - 1
        if t in _ROMAN and i > 0 and (t not in ("v", "x") or last or prev in _NUMBER_WORDS):
            t = str(_ROMAN[t])
        elif t == "i" and prev in _NUMBER_WORDS:
            t = "1"
        elif t.isdigit():
            t = str(int(t)) if len(t) < 4 else t
        out.append(t)
    # "Part II" is "2"; "Part 1" / a first film's "1" is the film itself
    merged: list[str] = []
    for i, t in enumerate(out):
        if t == "part" and i + 1 < len(out) and out[i + 1].isdigit():
            continue
        merged.append(t)
    if merged and merged[-1] == "1" and len(merged) > 1 and not merged[-2].isdigit():
        merged.pop()
    return merged


def _join_letters(tokens: list[str]) -> list[str]:
    """Runs of two or more single letters become one word: punctuation between initials is not a word break."""
    out: list[str] = []
    run: list[str] = []
    for t in tokens + [""]:
        if len(t) == 1 and t.isalpha():
            run.append(t)
            continue
        out += ["".join(run)] if len(run) > 1 else run
        run = []
        if t:
            out.append(t)
    return out


def title_tokens(name: str) -> list[str]:
    """Canonical tokens of a title without its year: ``"The Godfather: Part II"`` -> ``["godfather", "2"]``."""
    tokens: list[str] = []
    for seg in _SUBTITLE_SEP.split(name):
        tokens += _segment_tokens(seg)
    if len(tokens) > 1 and tokens[0] in _LEADING_ARTICLES:
        tokens = tokens[1:]
    return tokens


def match_key(title: str) -> str:
    """The form compared when grounding: canonical tokens of the title (article moved, no year), one space apart."""
    name, _ = split_year(normalise_title(title))
    return " ".join(title_tokens(name))


def _numbers(tokens: Sequence[str]) -> tuple[str, ...]:
    return tuple(sorted(t for t in tokens if t.isdigit()))


def _words(tokens: Sequence[str]) -> list[str]:
    return [t for t in tokens if not t.isdigit() and t not in _STOPWORDS]


def _covered(a: list[str], b: list[str]) -> bool:
    """Every word of ``a`` has a close word in ``b``: equal when short; from 4 letters a typo away (ratio >= 85:
    "redemtion" / "redemption" 95, but "spiderman" / "superman" 82) or a spelling variant of the same stem (4
    letters in common at the start and ratio >= 75: "dwarves" / "dwarfs")."""
    for w in a:
        if w in b:
            continue
        if len(w) < 4 or not any(len(v) >= 4 and _close_words(w, v) for v in b):
            return False
    return True


def _close_words(w: str, v: str) -> bool:
    ratio = fuzz.ratio(w, v)
    return ratio >= 85 or (ratio >= 75 and w[:4] == v[:4])


def _same_words(q: Sequence[str], c: Sequence[str]) -> bool:
    qw, cw = _words(q), _words(c)
    if _covered(qw, cw) and _covered(cw, qw):
        return True
    return "".join(q) == "".join(c)  # spacing only: "Spiderman" / "Spider-Man"


def _unquote(text: str) -> str:
    """Quotes around a title off ('"Heat"'); a lone trailing apostrophe is an elided article and stays ("Enfer, L'")."""
    t = text.strip()
    while len(t) > 1 and t[0] in _QUOTES and t[-1] in _QUOTES:
        t = t[1:-1].strip()
    return t.lstrip(_QUOTES).strip() if t[:1] in _QUOTES else t


def clean_text(text: str) -> str:
    """Markdown and surrounding quotes off, and anything after a "(Year)" dropped ("Heat (1995) (Crime)")."""
    t = _unquote(_MARKUP.sub("", text))
    m = _YEAR_THEN_NOTES.match(t)
    if m:
        t = f"{_unquote(m.group('name'))} ({m.group('year')})"
    return re.sub(r"\s+", " ", t).strip(" ,;.")


@dataclass(frozen=True)
class Grounded:
    """One free-text title matched to a catalog item, or not (``item`` None).

    ``score`` is 0..100; ``why`` names the rule that decided, then a colon and the detail ("sequel: 4 in the text,
    2 in Die Hard 2 (1990)"). :attr:`rule` is that first word: one of :data:`WHY_GROUNDED` or :data:`WHY_NOT`.
    """

    text: str
    item: int | None
    title: str | None
    score: float
    why: str = ""

    @property
    def rule(self) -> str:
        return self.why.split(":", 1)[0]

    @property
    def ambiguous(self) -> bool:
        return self.item is None and self.rule == "ambiguous"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["score"] = round(float(d["score"]), 1)
        return d


@dataclass
class _Key:
    row: int
    tokens: tuple[str, ...]
    kind: str           # "title" (a full or alternate title) or "main" (a title without its subtitle)
    primary: bool       # the film's own title, not a parenthesised alternate


class TitleMatcher:
    """Grounds free text against catalog rows (their raw MovieLens titles, years and display titles)."""

    def __init__(self, raw_titles: Sequence[str], years: Sequence[int | None], titles: Sequence[str],
                 ids: np.ndarray, year_tolerance: int = 1):
        self.titles = list(titles)
        self.ids = np.asarray(ids, dtype=np.int64)
        self.years = [None if y is None or y != y else int(y) for y in years]
        self.year_tolerance = year_tolerance
        self.keys: list[_Key] = []
        self.exact: dict[str, list[int]] = {}
        for row, raw in enumerate(raw_titles):
            seen: set[tuple[tuple[str, ...], str]] = set()
            for tokens, kind, primary in self._row_keys(raw):
                if tokens and (tokens, kind) not in seen:
                    seen.add((tokens, kind))
                    self.keys.append(_Key(row, tokens, kind, primary))
                    self.exact.setdefault(kind + "|" + " ".join(tokens), []).append(len(self.keys) - 1)
        self.key_strings = [" ".join(k.tokens) for k in self.keys]

    @staticmethod
    def _row_keys(raw: str) -> list[tuple[tuple[str, ...], str, bool]]:
        """A catalog title's keys: the full title, the title without its alternates, each alternate (not primary),
        and every prefix before a subtitle separator ("main")."""
        name, _ = split_year(normalise_title(raw))
        main = _TRAILING_PARENS.sub("", name).strip() or name
        names = [name, main]
        for alt in _PARENS.findall(name):
            for part in re.split(r",\s*a\.k\.a\.\s*|/", _AKA.sub("", alt)):
                if part.strip():
                    names.append(normalise_title(part.strip()))
        out: list[tuple[tuple[str, ...], str, bool]] = []
        for j, n in enumerate(names):
            tokens = title_tokens(n)
            out.append((tuple(tokens), "title", j < 2))
            if "episode" in tokens:  # "Star Wars: A New Hope" names "Star Wars: Episode IV - A New Hope"
                i = tokens.index("episode")
                if i + 1 < len(tokens) and tokens[i + 1].isdigit():
                    out.append((tuple(tokens[:i] + tokens[i + 2:]), "title", j < 2))
            for m in _SUBTITLE_SEP.finditer(n):
                if m.start() > 0:
                    out.append((tuple(title_tokens(n[: m.start()])), "main", j < 2))
        return out

    # ---- one decision ---------------------------------------------------------------------------------------

    def _describe(self, row: int) -> str:
        return self.titles[row]

    def _decide(self, text: str, rows: list[int], year: int | None, rule: str, base: float,
                allowed: set[int] | None, primary: set[int] = frozenset()) -> "Grounded":
        """Pick among catalog rows that all name the text equally well: the year decides; then a film whose own
        title it is beats films that list it as an alternate (MovieLens has a few films twice, once under an
        alternate title); else ambiguous."""
        rows = list(dict.fromkeys(rows))
        if allowed is not None:
            kept = [r for r in rows if r in allowed]
            if not kept:
                return Grounded(text, None, None, base, f"not-allowed: {self._describe(rows[0])} is excluded here")
            rows = kept
        if year is None:
            if len(rows) > 1 and len(own := [r for r in rows if r in primary]) == 1:
                rows = own
            if len(rows) == 1:
                r = rows[0]
                return Grounded(text, int(self.ids[r]), self.titles[r], base, f"{rule}: {self._describe(r)}")
            names = ", ".join(self._describe(r) for r in sorted(rows, key=lambda r: self.years[r] or 0))
            return Grounded(text, None, None, base, f"ambiguous: {len(rows)} catalog films fit ({names}); "
                                                     f"a year would decide")
        gaps = {r: (0 if self.years[r] is None else abs(self.years[r] - year)) for r in rows}
        best = min(gaps.values())
        if best > self.year_tolerance:
            years = ", ".join(str(self.years[r]) for r in sorted(rows, key=lambda r: self.years[r] or 0))
            return Grounded(text, None, None, max(base - 15, 0.0),
                            f"year: {self._describe(rows[0]) if len(rows) == 1 else 'this title'} is {years} "
                            f"in the catalog, not {year}")
        closest = [r for r in rows if gaps[r] == best]
        if len(closest) > 1 and len(own := [r for r in closest if r in primary]) == 1:
            closest = own
        if len(closest) > 1:
            names = ", ".join(self._describe(r) for r in closest)
            return Grounded(text, None, None, base, f"ambiguous: {names} are equally close to {year}")
        r = closest[0]
        score = base - (5 if best else 0)
        if len(rows) > 1 and rule == "exact":
            rule = "year-decides"
        detail = self._describe(r) + (f", year off by {best}" if best else "")
        return Grounded(text, int(self.ids[r]), self.titles[r], score, f"{rule}: {detail}")

    def _query(self, text: str) -> tuple[str, int | None, list[tuple[str, ...]]]:
        cleaned = clean_text(text)
        name, year = split_year(cleaned)
        name = normalise_title(name)
        variants = [tuple(title_tokens(name))]
        bare = _TRAILING_PARENS.sub("", name).strip()
        if bare and bare != name:
            variants.append(tuple(title_tokens(bare)))
        return cleaned, year, [v for v in variants if v]

    def exact_rows(self, text: str) -> list[int]:
        """Catalog rows whose title (or alternate) is exactly ``text`` after normalisation, any year."""
        _, _, variants = self._query(text)
        keys = [k for v in variants for k in self.exact.get("title|" + " ".join(v), [])]
        return list(dict.fromkeys(self.keys[k].row for k in keys))

    def ground_many(self, texts: Sequence[str], min_score: float = 80.0,
                    allowed: np.ndarray | None = None) -> list["Grounded"]:
        """Ground every text (one vectorised rapidfuzz call for those that need the fuzzy tier). ``allowed``
        (item ids) restricts which films may be returned; naming an excluded film gives ``not-allowed``."""
        allowed_rows = None
        if allowed is not None:
            allowed_rows = set(np.flatnonzero(np.isin(self.ids, np.asarray(allowed, dtype=np.int64))).tolist())
        out: list[Grounded | None] = [None] * len(texts)
        fuzzy: list[int] = []
        parsed = [self._query(t) for t in texts]
        for i, (text, (_, year, variants)) in enumerate(zip(texts, parsed)):
            if not variants:
                out[i] = Grounded(text, None, None, 0.0, "empty: no title words")
                continue
            for kind, rule, base in (("title", "exact", 100.0), ("main", "main-title", 95.0)):
                keys = [self.keys[k] for v in variants for k in self.exact.get(kind + "|" + " ".join(v), [])]
                if keys:
                    out[i] = self._decide(text, [k.row for k in keys], year, rule, base, allowed_rows,
                                          {k.row for k in keys if k.primary})
                    break
            if out[i] is None:
                fuzzy.append(i)
        if fuzzy and self.keys:
            queries = [" ".join(parsed[i][2][0]) for i in fuzzy]
            scores = process.cdist(queries, self.key_strings, scorer=fuzz.ratio, dtype=np.float32, workers=1)
            for j, i in enumerate(fuzzy):
                out[i] = self._fuzzy(texts[i], parsed[i][1], parsed[i][2][0], scores[j], min_score, allowed_rows)
        for i in fuzzy:
            if out[i] is None:
                out[i] = Grounded(texts[i], None, None, 0.0, "no-match: the catalog is empty")
        return [g if g.item is None or g.score >= min_score else
                Grounded(g.text, None, None, g.score, f"no-match: {g.why} scores {g.score:.0f} < {min_score:.0f}")
                for g in out]

    def _fuzzy(self, text: str, year: int | None, q: tuple[str, ...], scores: np.ndarray, min_score: float,
               allowed: set[int] | None) -> "Grounded":
        order = np.argsort(-scores, kind="stable")[:40]
        order = [k for k in order if scores[k] >= min_score]
        if not order:
            best = float(scores.max()) if len(scores) else 0.0
            return Grounded(text, None, None, best, f"no-match: nothing in the catalog scores {min_score:.0f}")
        valid: dict[int, float] = {}
        first_reason = None
        for k in order:
            key, s = self.keys[k], float(scores[k])
            r = key.row
            if allowed is not None and r not in allowed:
                first_reason = first_reason or (s, f"not-allowed: {self._describe(r)} is excluded here")
                continue
            if _numbers(q) != _numbers(key.tokens):
                qn = " ".join(_numbers(q)) or "no number"
                cn = " ".join(_numbers(key.tokens)) or "no number"
                first_reason = first_reason or (s, f"sequel: {qn} in the text, {cn} in {self._describe(r)}")
                continue
            if not _same_words(q, key.tokens):
                first_reason = first_reason or (s, f"words: the text and {self._describe(r)} differ in a word")
                continue
            cy = self.years[r]
            gap = 0 if year is None or cy is None else abs(cy - year)
            if gap > self.year_tolerance:
                first_reason = first_reason or (s, f"year: {self._describe(r)} is {cy} in the catalog, not {year}")
                continue
            s -= 5 if gap else 0
            valid[r] = max(valid.get(r, 0.0), s)
        if not valid:
            s, why = first_reason
            return Grounded(text, None, None, s, why)
        best = max(valid.values())
        tied = [r for r, s in valid.items() if s >= best - 1e-6]
        if len(tied) > 1:
            return self._decide(text, tied, year, "fuzzy", best, None)
        r = tied[0]
        return Grounded(text, int(self.ids[r]), self.titles[r], best, f"fuzzy: {self._describe(r)} ({best:.0f})")
