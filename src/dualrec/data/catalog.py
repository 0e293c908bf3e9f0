"""The item catalog: ids, readable titles, years, genres, and grounding of free text to items.

MovieLens writes titles library-style ("Matrix, The (1999)"); :func:`normalise_title` turns them into the form
people and language models write ("The Matrix (1999)"). :meth:`Catalog.ground` maps any free text (an LLM's line,
a user's typing) to the closest catalog item with a 0..100 score, using rapidfuzz.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

# Trailing articles MovieLens moves to the end: "Misérables, Les", "Avventura, L'".
_ARTICLES = ("The", "A", "An", "Les", "La", "Le", "L'", "Il", "El", "Das", "Der", "Die", "Den", "Det", "Lo", "Los", "Las")
_YEAR_RE = re.compile(r"\s*\((\d{4})(?:[-–]\d{0,4})?\)\s*$")
_ARTICLE_RE = re.compile(r"^(?P<main>.+?), (?P<art>" + "|".join(re.escape(a) for a in _ARTICLES) + r")(?P<rest>(?: \([^()]*\))*)$")
_PUNCT_RE = re.compile(r"[^\w\s]")
_SPACE_RE = re.compile(r"\s+")


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


def match_key(title: str) -> str:
    """The form compared when grounding: lower case, no punctuation, one space, no year, no leading article."""
    name, _ = split_year(normalise_title(title))
    key = _SPACE_RE.sub(" ", _PUNCT_RE.sub(" ", name.lower())).strip()
    for art in ("the ", "a ", "an "):
        if key.startswith(art):
            return key[len(art):]
    return key


@dataclass(frozen=True)
class Grounded:
    """One free-text title matched to a catalog item; ``score`` is 0..100 (100: same title and year)."""

    text: str
    item: int | None
    title: str | None
    score: float


class Catalog:
    """Items with ``item`` (original id), ``title`` (normalised), ``raw_title``, ``year`` and ``genres``.

    Build one with :meth:`from_frame` from any table with an id, a title and optionally ``genres``
    (a ``|``-separated string or a list).
    """

    def __init__(self, items: pd.DataFrame, genre_names: Sequence[str] | None = None):
        self.items = items.reset_index(drop=True)
        self.ids = self.items["item"].to_numpy(np.int64)
        self._row = pd.Series(np.arange(len(self.items)), index=self.ids)
        if genre_names is None:
            genre_names = sorted({g for gs in self.items["genres"] for g in gs})
        self.genre_names = list(genre_names)
        self._keys: list[str] | None = None
        self._key_rows: np.ndarray | None = None

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, id_col: str = "item", title_col: str = "title",
                   genres_col: str | None = "genres", genre_names: Sequence[str] | None = None) -> "Catalog":
        raw = frame[title_col].astype(str).str.strip()
        if genres_col and genres_col in frame:
            genres = [tuple(g) if isinstance(g, (list, tuple, np.ndarray)) else
                      tuple(x for x in str(g).split("|") if x and x != "(no genres listed)") if isinstance(g, str) else ()
                      for g in frame[genres_col]]
        else:
            genres = [()] * len(frame)
        years = [split_year(t)[1] for t in raw]
        items = pd.DataFrame({
            "item": frame[id_col].astype(np.int64).to_numpy(),
            "title": [normalise_title(t) for t in raw],
            "raw_title": raw.to_numpy(),
            "year": pd.array(years, dtype="Int64"),
            "genres": genres,
        })
        return cls(items, genre_names)

    # ---- lookup -------------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.items)

    def __contains__(self, item: int) -> bool:
        return int(item) in self._row.index

    def rows(self, items: Iterable[int]) -> np.ndarray:
        """Row positions of original item ids; raises ``KeyError`` naming the unknown ids."""
        items = np.asarray(list(items) if not isinstance(items, np.ndarray) else items, dtype=np.int64)
        rows = self._row.reindex(items).to_numpy()
        if np.isnan(rows.astype(float)).any():
            missing = items[np.isnan(rows.astype(float))]
            raise KeyError(f"unknown item id(s) not in the catalog: {missing[:10].tolist()}")
        return rows.astype(np.int64)

    def has(self, items: np.ndarray) -> np.ndarray:
        """Boolean mask: which of ``items`` the catalog knows."""
        return np.isin(np.asarray(items, dtype=np.int64), self.ids)

    def title(self, item: int) -> str:
        return self.items.at[int(self._row[int(item)]), "title"]

    def titles(self, items: Iterable[int]) -> list[str]:
        return self.items["title"].to_numpy()[self.rows(items)].tolist()

    def year(self, item: int) -> int | None:
        y = self.items.at[int(self._row[int(item)]), "year"]
        return None if pd.isna(y) else int(y)

    def genres(self, item: int) -> tuple[str, ...]:
        return self.items.at[int(self._row[int(item)]), "genres"]

    def describe(self, item: int) -> dict:
        """JSON-ready view of one item: id, title, year, genres."""
        return {"item": int(item), "title": self.title(item), "year": self.year(item), "genres": list(self.genres(item))}

    def genre_matrix(self, items: Sequence[int] | None = None) -> np.ndarray:
        """Multi-hot float32 matrix ``[len(items), n_genres]`` in :attr:`genre_names` order."""
        rows = np.arange(len(self)) if items is None else self.rows(items)
        index = {g: j for j, g in enumerate(self.genre_names)}
        out = np.zeros((len(rows), len(self.genre_names)), dtype=np.float32)
        all_genres = self.items["genres"].to_numpy()
        for i, r in enumerate(rows):
            for g in all_genres[r]:
                if g in index:
                    out[i, index[g]] = 1.0
        return out

    def subset(self, items: Sequence[int]) -> "Catalog":
        """A catalog of only ``items`` (in that order), keeping the genre vocabulary."""
        return Catalog(self.items.iloc[self.rows(items)].copy(), self.genre_names)

    # ---- grounding ----------------------------------------------------------------------------------------

    def _match_keys(self) -> tuple[list[str], np.ndarray]:
        """Every item is reachable by its normalised title and, if it has one, its parenthesised alternative."""
        if self._keys is None:
            keys, rows = [], []
            for r, raw in enumerate(self.items["raw_title"]):
                name, _ = split_year(raw)
                main = re.sub(r"\s*\([^()]*\)\s*$", "", name) if name.endswith(")") else name
                for k in {match_key(name), match_key(main)} | set(match_key(a) for a in re.findall(r"\(([^()]*)\)", name)):
                    if k:
                        keys.append(k)
                        rows.append(r)
            self._keys, self._key_rows = keys, np.asarray(rows, dtype=np.int64)
        return self._keys, self._key_rows

    def ground(self, text: str, min_score: float = 80.0, allowed: np.ndarray | None = None) -> Grounded:
        """The catalog item ``text`` names, or ``Grounded(item=None)`` when none scores ``min_score``."""
        return self.ground_many([text], min_score=min_score, allowed=allowed)[0]

    def ground_many(self, texts: Sequence[str], min_score: float = 80.0,
                    allowed: np.ndarray | None = None) -> list[Grounded]:
        """Ground many texts in one vectorised rapidfuzz call.

        Score: rapidfuzz ``ratio`` of the match keys (title without year and leading article); when the text gives
        a year, a different catalog year costs 5 points if one year off and 15 otherwise, so "Heat (1995)" and
        "Heat (1986)" ground to different films. ``allowed`` restricts the candidates to these item ids.
        """
        from rapidfuzz import fuzz, process

        if not texts:
            return []
        keys, key_rows = self._match_keys()
        if allowed is not None:
            keep = np.isin(key_rows, self.rows(np.asarray(allowed, dtype=np.int64)))
            keys = [k for k, m in zip(keys, keep) if m]
            key_rows = key_rows[keep]
        queries = [match_key(t) for t in texts]
        scores = process.cdist(queries, keys, scorer=fuzz.ratio, dtype=np.float32, workers=1)
        q_years = np.array([y if (y := split_year(t.strip())[1]) is not None else -1 for t in texts])
        cat_years = self.items["year"].fillna(-1).to_numpy(np.int64)[key_rows]
        gap = np.abs(q_years[:, None] - cat_years[None, :])
        penalty = np.where(q_years[:, None] < 0, 0, np.where(gap == 0, 0, np.where(gap == 1, 5, 15)))
        scores = scores - penalty
        best = scores.argmax(axis=1) if len(keys) else np.zeros(len(texts), dtype=np.int64)
        out = []
        titles = self.items["title"].to_numpy()
        for i, text in enumerate(texts):
            s = float(scores[i, best[i]]) if len(keys) else 0.0
            if s >= min_score and queries[i]:
                r = key_rows[best[i]]
                out.append(Grounded(text, int(self.ids[r]), str(titles[r]), s))
            else:
                out.append(Grounded(text, None, None, max(s, 0.0)))
        return out
