"""The item catalog: ids, readable titles, years, genres, and grounding of free text to items.

MovieLens writes titles library-style ("Matrix, The (1999)"); :func:`normalise_title` turns them into the form
people and language models write ("The Matrix (1999)"). :meth:`Catalog.ground` maps any free text (an LLM's line,
a user's typing) to the catalog film it names, or to none, and says which rule decided
(:mod:`dualrec.data.grounding`).
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from dualrec.data.grounding import Grounded, TitleMatcher, match_key, normalise_title, split_year

__all__ = ["Catalog", "Grounded", "match_key", "normalise_title", "split_year"]

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
        self._matcher: TitleMatcher | None = None

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

    def matcher(self) -> TitleMatcher:
        """The grounding index over this catalog's titles, built on first use."""
        if self._matcher is None:
            self._matcher = TitleMatcher(self.items["raw_title"].tolist(),
                                         [None if pd.isna(y) else int(y) for y in self.items["year"]],
                                         self.items["title"].tolist(), self.ids)
        return self._matcher

    def ground(self, text: str, min_score: float = 80.0, allowed: np.ndarray | None = None) -> Grounded:
        """The catalog item ``text`` names, or ``Grounded(item=None)`` with the reason (``why``) when none does."""
        return self.ground_many([text], min_score=min_score, allowed=allowed)[0]

    def ground_many(self, texts: Sequence[str], min_score: float = 80.0,
                    allowed: np.ndarray | None = None) -> list[Grounded]:
        """Ground many texts: exact titles first, then near spellings that are the same film (rules and scores in
        :mod:`dualrec.data.grounding`). ``min_score`` is the least fuzzy ratio accepted; ``allowed`` restricts
        the films that may be returned to these item ids."""
        if not texts:
            return []
        return self.matcher().ground_many(list(texts), min_score=min_score, allowed=allowed)

    def is_exact_title(self, text: str) -> bool:
        """Whether ``text`` is a catalog title (or alternate title) after normalisation, whatever its year."""
        return bool(self.matcher().exact_rows(text))
